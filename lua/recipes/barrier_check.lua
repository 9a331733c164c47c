-- Is a barrier held (Barrier::wait; see src/recipes/barrier.rs)? A hold whose lease is dead is not.
-- Read-only.
-- KEYS: rev, leases, barrier:<name>
-- Returns {1, ms left on the holder's lease} or {0, 0}.
expect_base()
local BK = KEYS[3]
expect_type(BK, 'hash')
local holder = redis.call('HGET', BK, 'lease')
local left = holder and lease_left(holder)
if left then return { 1, left } end
return { 0, 0 }
