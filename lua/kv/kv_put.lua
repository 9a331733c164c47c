-- Put a key, optionally attached to a lease: it then lives exactly as long as the lease
-- (Client::put, Session::put; see src/kv/mod.rs).
-- KEYS: rev, leases, key:<name>, keys, and attached:<lease> when a lease is given
-- ARGV: name, value, lease id ('' = no lease)
-- Returns {'ok', revision} or {'lost'} when the lease is not alive.
expect_base()
local K, IDX = KEYS[3], KEYS[4]
local name, value, lease = ARGV[1], ARGV[2], ARGV[3]
if K ~= kv_key(name) or IDX ~= KEYS_INDEX then fail('ARG', 'keys do not match key ' .. name) end
expect_type(K, 'hash')
expect_type(IDX, 'zset')
if lease ~= '' then
  local AK = KEYS[5]
  if AK ~= attached_key(lease) then fail('ARG', 'keys do not match lease ' .. lease) end
  expect_type(AK, 'set')
  if not lease_left(lease) then return { 'lost' } end
end
return { 'ok', kv_put_apply(name, value, lease) }
