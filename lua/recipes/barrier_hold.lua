-- Hold a barrier: waiters block until it is released (Barrier::hold; see src/recipes/barrier.rs).
-- The hold is attached to the holder's lease, so a crashed holder cannot block everyone
-- forever.
-- KEYS: rev, leases, barrier:<name>, attached:<lease>
-- ARGV: lease id
-- Returns 1 when held now, 0 when someone (alive) already holds it, or {'lost'}.
expect_base()
local BK, AK = KEYS[3], KEYS[4]
local lease = ARGV[1]
if kind_of(BK) ~= 'barrier' or AK ~= attached_key(lease) then fail('ARG', 'keys do not match barrier ' .. BK) end
expect_type(BK, 'hash')
expect_type(AK, 'set')
if not lease_left(lease) then return { 'lost' } end
local holder = redis.call('HGET', BK, 'lease')
if holder and lease_left(holder) then
  if holder == lease then return 1 end
  return 0
end
if holder then detach_key(holder, BK) end
redis.call('HSET', BK, 'lease', lease)
attach(lease, AK, 'k ' .. BK)
touch_rev()
return 1
