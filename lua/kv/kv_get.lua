-- Read one key; a key whose lease is dead reads as absent (Client::get; see src/kv.rs).
-- Read-only.
-- KEYS: rev, leases, key:<name>
-- Returns nil or {value, lease, create revision, mod revision, version}.
expect_base()
local K = KEYS[3]
expect_type(K, 'hash')
local f = redis.call('HMGET', K, 'v', 'lease', 'crev', 'mrev', 'ver')
if not f[1] then return nil end
local lease = f[2] or ''
if lease ~= '' and not lease_left(lease) then return nil end
return { f[1], lease, kv_counter(K, f[3]), kv_counter(K, f[4]), kv_counter(K, f[5]) }
