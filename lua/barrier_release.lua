-- Release a barrier: every waiter returns (Barrier::release; see src/barrier.rs).
-- KEYS: rev, leases, barrier:<name>
-- Returns 1 when it was held, 0 otherwise.
expect_base()
local BK = KEYS[3]
if kind_of(BK) ~= 'barrier' then fail('ARG', 'not a barrier key: ' .. BK) end
expect_type(BK, 'hash')
local holder = redis.call('HGET', BK, 'lease')
if not holder then return 0 end
local oak = attached_key(holder)
if redis.call('TYPE', oak)['ok'] == 'set' then redis.call('SREM', oak, 'k ' .. BK) end
local alive = lease_left(holder) ~= nil
drop_kv(BK, holder)
if alive then return 1 end
return 0
