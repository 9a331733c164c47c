-- Delete a key (Client::delete; see src/kv.rs).
-- KEYS: rev, leases, key:<name>, keys
-- ARGV: name
-- Returns 1 when a live key was deleted, else 0.
expect_base()
local K, IDX = KEYS[3], KEYS[4]
local name = ARGV[1]
if K ~= P .. KV .. name or IDX ~= KEYS_INDEX then fail('ARG', 'keys do not match key ' .. name) end
expect_type(K, 'hash')
expect_type(IDX, 'zset')
if redis.call('EXISTS', K) == 0 then
  redis.call('ZREM', IDX, name)
  return 0
end
local lease = redis.call('HGET', K, 'lease') or ''
local alive = lease == '' or lease_left(lease) ~= nil
if lease ~= '' then detach_key(lease, K) end
redis.call('DEL', K)
redis.call('ZREM', IDX, name)
touch_rev()
if alive then return 1 end
return 0
