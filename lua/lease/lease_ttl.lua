-- Time to live of one lease, with its metadata and optionally what is attached to it
-- (Client::time_to_live; see src/lease/leases.rs). Read-only.
-- KEYS: rev, leases, lease:<id>, attached:<id>
-- ARGV: id, with_keys (1/0)
-- Returns nil when the lease is not alive, else
-- {ttl, remaining_ms, client, host, pid, label, granted_ms, attached count, attachment...}:
-- at most ATTACHMENTS_SHOWN attachments (any of them, when there are more).
expect_base()
local LK, AK = KEYS[3], KEYS[4]
local id = ARGV[1]
expect_lease_keys(id)
local left = lease_left(id)
if not left or redis.call('EXISTS', LK) == 0 then return nil end
local f = redis.call('HMGET', LK, 'ttl', 'client', 'host', 'pid', 'label', 'granted')
local out = { ttl_of(f[1]) or -1, left, f[2] or '', f[3] or '', f[4] or '', f[5] or '',
  uint_of(f[6]) or -1, attached_count(AK) }
local ATTACHMENTS_SHOWN = 1000
if ARGV[2] == '1' and redis.call('TYPE', AK)['ok'] == 'set' then
  -- A sample, not SMEMBERS: a lease may hold millions, and one call must stay short.
  for _, e in ipairs(redis.call('SRANDMEMBER', AK, ATTACHMENTS_SHOWN)) do
    if is_attachment(e) then out[#out + 1] = e end
  end
end
return out
