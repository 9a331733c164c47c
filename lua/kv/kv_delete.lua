-- Delete a key (Client::delete; see src/kv/mod.rs).
-- KEYS: rev, leases, key:<name>, keys
-- ARGV: name
-- Returns 1 when a live key was deleted, else 0.
expect_base()
local K, IDX = KEYS[3], KEYS[4]
local name = ARGV[1]
if K ~= kv_key(name) or IDX ~= KEYS_INDEX then fail('ARG', 'keys do not match key ' .. name) end
expect_type(K, 'hash')
expect_type(IDX, 'zset')
if kv_delete_apply(name) then return 1 end
return 0
