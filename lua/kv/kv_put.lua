-- Put a key, optionally attached to a lease: it then lives exactly as long as the lease
-- (Client::put, Session::put; see src/kv.rs).
-- KEYS: rev, leases, key:<name>, keys, and attached:<lease> when a lease is given
-- ARGV: name, value, lease id ('' = no lease)
-- Returns {'ok', revision} or {'lost'} when the lease is not alive.
expect_base()
local K, IDX = KEYS[3], KEYS[4]
local name, value, lease = ARGV[1], ARGV[2], ARGV[3]
if K ~= P .. KV .. name or IDX ~= KEYS_INDEX then fail('ARG', 'keys do not match key ' .. name) end
expect_type(K, 'hash')
expect_type(IDX, 'zset')
local AK = KEYS[5]
if lease ~= '' then
  if AK ~= attached_key(lease) then fail('ARG', 'keys do not match lease ' .. lease) end
  expect_type(AK, 'set')
  if not lease_left(lease) then return { 'lost' } end
end
local old = redis.call('HMGET', K, 'lease', 'crev', 'ver')
local old_lease, crev, ver = old[1] or '', tonumber(old[2]), tonumber(old[3]) or 0
-- A key whose lease is dead is gone, whether or not a sweep has deleted it yet.
if old_lease ~= '' and not lease_left(old_lease) then crev, ver = nil, 0 end
if old_lease ~= '' and old_lease ~= lease then detach_key(old_lease, K) end
local rev = next_rev()
redis.call('HSET', K, 'v', value, 'lease', lease, 'crev', int(crev or rev), 'mrev', int(rev),
  'ver', int(ver + 1))
redis.call('ZADD', IDX, 0, name)
if lease ~= '' then attach(lease, AK, 'k ' .. K) end
return { 'ok', rev }
