-- Revoke a lease: delete everything attached to it, wake whoever waited behind it and ring the
-- owner's doorbell (Client::revoke, Session::close, dropping a Session; see src/lease/leases.rs).
-- KEYS: rev, leases, lease:<id>, attached:<id>
-- ARGV: id[, caller client id: its own doorbell is not rung (the session already ended there)]
-- Returns {1 when the lease was alive (0 when it was already dead or gone), 1 when its
-- attachments are all released (0: the drop budget ran out; call again to go on)}.
-- The first call ends the lease (nobody can renew or use it after it); a lease with more
-- attachments than one call's budget (lua/prelude/queues.lua) needs further calls to release
-- the rest, and any client's sweep finishes it if the caller does not.
expect_base()
local LK, AK = KEYS[3], KEYS[4]
local id = ARGV[1]
expect_lease_keys(id)
local known = lease_left(id) ~= nil and redis.call('EXISTS', LK) == 1
local done = drop_lease(id, 'r', ARGV[2])
return { known and 1 or 0, done and 1 or 0 }
