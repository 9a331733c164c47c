-- Does this contender own the mutex right now, by the server's view (MutexGuard::is_owner;
-- see src/mutex.rs)? Read-only.
-- KEYS: rev, leases, mutex:<name>
-- ARGV: contender, revision
-- Returns {1 or 0, ms left on the owner's lease or 0}.
expect_base()
local Q = KEYS[3]
expect_type(Q, 'zset')
local head, left, score = live_head(Q, false, 64)
if head == ARGV[1] and score == tonumber(ARGV[2]) then return { 1, left } end
return { 0, 0 }
