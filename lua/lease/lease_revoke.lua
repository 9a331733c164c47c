-- Revoke a lease: delete everything attached to it, wake whoever waited behind it and ring the
-- owner's doorbell (Client::revoke, Session::close, dropping a Session; see src/lease/leases.rs).
-- KEYS: rev, leases, lease:<id>, attached:<id>[, revoked]
-- ARGV: id[, caller client id: its own doorbell is not rung (the session already ended there;
--   '' for none)[, tombstone ms: with the fifth key, in a sub-namespace of a spread namespace,
--   the id cannot be granted here again for that long (see lease_touch.lua)]]
-- Returns {1 when the lease was alive (0 when it was already dead or gone), 1 when its
-- attachments are all released (0: the drop budget ran out; call again to go on)}.
-- The first call ends the lease (nobody can renew or use it after it); a lease with more
-- attachments than one call's budget (lua/prelude/queues.lua) needs further calls to release
-- the rest, and any client's sweep finishes it if the caller does not.
expect_base()
local LK, AK = KEYS[3], KEYS[4]
local id = ARGV[1]
expect_lease_keys(id)
if KEYS[5] then
  expect_tombstones(KEYS[5])
  local ms = uint_of(ARGV[3])
  if not ms or ms < 1 or ms > 2 * MAX_TTL_MS then fail('ARG', 'tombstone ms out of range') end
  trim_tombstones(KEYS[5])
  redis.call('ZADD', KEYS[5], int(NOW_MS + ms), id)
end
local known = lease_left(id) ~= nil and redis.call('EXISTS', LK) == 1
local done = drop_lease(id, 'r', ARGV[2])
return { known and 1 or 0, done and 1 or 0 }
