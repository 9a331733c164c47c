-- Does this contender own its lock (mutex, rwlock or semaphore) right now, by the server's
-- view (MutexGuard::is_owner and the other guards; see src/wait/entry.rs)?
-- KEYS: rev, leases, <kind>:<name>
-- ARGV: contender, revision
-- Returns {1 or 0, ms left on the contender's lease or 0}.
expect_base()
local Q = KEYS[3]
expect_type(Q, 'zset')
local list = owners(Q)
for _, o in ipairs(list) do
  if o[1] == ARGV[1] and o[2] == uint_of(ARGV[2]) then return { 1, o[3] } end
end
return { 0, 0 }
