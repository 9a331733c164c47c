-- Grant or renew a sub-lease: a session's lease in one sub-namespace of a spread namespace,
-- made by its first lock call there (src/session/spread.rs). The id is the session's, derived
-- for this sub-namespace (LeaseId::in_sub_namespace).
-- KEYS: rev, leases, lease:<id>, attached:<id>, revoked
-- ARGV: id, ttl_ms, client id, epoch (this grant's nonce: a renewal that drops the sub-lease
--   when idle names it, so that a drop still in flight from an earlier grant does nothing),
--   host, pid, label
-- Returns the TTL in ms; -1 when the id is revoked here (a tombstone: the session was revoked
-- from outside); -2 when the live lease of that id is another client's; -3 when an earlier
-- grant of the id, expired, still has attachments to release (call again).
expect_base()
local LK, AK, RK = KEYS[3], KEYS[4], KEYS[5] or ''
local id, ttl = ARGV[1], ttl_of(ARGV[2])
if not ttl then fail('ARG', 'ttl must be a whole number of ms from 1 to ' .. MAX_TTL_MS) end
local client, epoch = ARGV[3] or '', ARGV[4] or ''
if client == '' or epoch == '' then fail('ARG', 'expected a client id and an epoch') end
expect_lease_keys(id)
expect_tombstones(RK)
trim_tombstones(RK)
local tomb = tonumber(redis.call('ZSCORE', RK, id))
if tomb and tomb > NOW_MS then return -1 end
local owner = redis.call('HGET', LK, 'client')
if lease_left(id) and owner then
  if owner ~= client then return -2 end
  redis.call('HSET', LK, 'ttl', int(ttl), 'epoch', epoch)
  redis.call('PEXPIRE', LK, int(ttl))
  redis.call('ZADD', REG, int(NOW_MS + ttl), id)
  return ttl
end
-- An earlier grant of the id that expired unswept (or the marker an idle drop leaves): release
-- what it held first, so that none of its entries comes back to life under this grant.
if owner or redis.call('EXISTS', LK) == 1 or redis.call('EXISTS', AK) == 1
    or redis.call('ZSCORE', REG, id) then
  if not drop_lease(id, 'x', client) then return -3 end
end
redis.call('HSET', LK, 'ttl', int(ttl), 'client', client, 'owner_rings', client,
  'fenced_rings', client, 'host', ARGV[5] or '', 'pid', ARGV[6] or '', 'label', ARGV[7] or '',
  'granted', int(NOW_MS), 'epoch', epoch)
redis.call('PEXPIRE', LK, int(ttl))
redis.call('ZADD', REG, int(NOW_MS + ttl), id)
return ttl
