-- Metadata of a page of leases for Client::leases (the ids come from the registry; see
-- src/lease/leases.rs). Read-only.
-- KEYS: rev, leases, then lease:<id>, attached:<id> for each id in ARGV order
-- ARGV: id...
-- Returns one row per id: {id, ttl, remaining_ms, client, host, pid, label, granted_ms,
-- attached count}; leases no longer alive are left out.
expect_base()
local out = {}
for i = 1, #ARGV do
  local id, lk, ak = ARGV[i], KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  if lk ~= lease_key(id) or ak ~= attached_key(id) then fail('ARG', 'keys do not match lease ' .. id) end
  local left = lease_left(id)
  if left and redis.call('TYPE', lk)['ok'] == 'hash' then
    local f = redis.call('HMGET', lk, 'ttl', 'client', 'host', 'pid', 'label', 'granted')
    local count = attached_count(ak)
    out[#out + 1] = { id, ttl_of(f[1]) or -1, left, f[2] or '', f[3] or '', f[4] or '',
      f[5] or '', uint_of(f[6]) or -1, count }
  end
end
return out
