-- Grant a lease (called by Client::grant and Session creation; see src/lease/leases.rs).
-- KEYS: rev, leases, lease:<id>, attached:<id>, meta
-- ARGV: id, ttl_ms, client id, host, pid, label, spread (sub-namespaces, 1 when unspread),
--   name hash version
-- Returns the TTL in ms. Granting an id that exists (a replayed call) changes nothing.
-- Fails with LHLAYOUT when the namespace's layout is not the client's (check_layout in
-- lua/prelude/queues.lua): that client must not hold anything here.
expect_base()
local LK, AK = KEYS[3], KEYS[4]
local id, ttl = ARGV[1], ttl_of(ARGV[2])
if not ttl then fail('ARG', 'ttl must be a whole number of ms from 1 to ' .. MAX_TTL_MS) end
expect_lease_keys(id)
check_layout(KEYS[5] or '', ARGV[7], ARGV[8] or '')
if redis.call('EXISTS', LK) == 1 then
  local cur = ttl_of(redis.call('HGET', LK, 'ttl'))
  if not cur then fail('CORRUPT', 'lease has no numeric ttl field: ' .. LK) end
  return cur
end
-- owner_rings, fenced_rings: this client takes 'o' doorbell rings, with the revision (see ring
-- in lua/prelude/core.lua).
redis.call('HSET', LK, 'ttl', int(ttl), 'client', ARGV[3], 'owner_rings', ARGV[3],
  'fenced_rings', ARGV[3],
  'host', ARGV[4], 'pid', ARGV[5], 'label', ARGV[6], 'granted', int(NOW_MS))
redis.call('PEXPIRE', LK, int(ttl))
redis.call('ZADD', REG, int(NOW_MS + ttl), id)
return ttl
