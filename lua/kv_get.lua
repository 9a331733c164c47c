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
return { f[1], lease, f[3] or '0', f[4] or '0', f[5] or '0' }
