-- Does this contender own its lock (mutex, rwlock or semaphore) right now, by the server's
-- view (MutexGuard::is_owner and the other guards; see src/wait/entry.rs)?
-- KEYS: rev, leases, <kind>:<name>
-- ARGV: contender, revision
-- Returns {1 or 0, ms left on the contender's lease or 0}.
expect_base()
local Q = KEYS[3]
expect_type(Q, 'zset')
local member, want = ARGV[1], uint_of(ARGV[2])
if tonumber(redis.call('ZSCORE', Q, member)) ~= want then return { 0, 0 } end
if not owns_now(Q, member) then return { 0, 0 } end
return { 1, lease_left(lease_of(member) or '') }
