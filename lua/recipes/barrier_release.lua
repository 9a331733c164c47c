-- Release a barrier: every waiter returns (Barrier::release; see src/recipes/barrier.rs).
-- KEYS: rev, leases, barrier:<name>
-- Returns 1 when it was held, 0 otherwise.
expect_base()
local BK = KEYS[3]
if kind_of(BK) ~= 'barrier' then fail('ARG', 'not a barrier key: ' .. BK) end
expect_type(BK, 'hash')
local holder = redis.call('HGET', BK, 'lease')
if not holder then return 0 end
detach_key(holder, BK)
local alive = lease_left(holder) ~= nil
drop_kv(BK, holder)
if alive then return 1 end
return 0
