-- Revoke a lease: delete everything attached to it, wake whoever waited behind it and ring the
-- owner's doorbell (Client::revoke, Session::close, dropping a Session; see src/lease/leases.rs).
-- KEYS: rev, leases, lease:<id>, attached:<id>
-- ARGV: id[, caller client id: its own doorbell is not rung (the session already ended there)]
-- Returns 1 when the lease existed, 0 when it was already gone.
expect_base()
local LK, AK = KEYS[3], KEYS[4]
local id = ARGV[1]
expect_lease_keys(id)
local known = lease_left(id) ~= nil and redis.call('EXISTS', LK) == 1
drop_lease(id, 'r', ARGV[2])
if known then return 1 end
return 0
