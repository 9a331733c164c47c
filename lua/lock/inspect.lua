-- Everyone in a queue (mutex, rwlock, semaphore or election), in order, with who holds and
-- the operator metadata of each entry's lease (Client::inspect; see src/inspect.rs).
-- Read-only: dead entries are reported, not removed.
-- KEYS: rev, leases, <kind>:<name>
-- Returns one row per entry: {member, revision, holder (1/0), ms left (0 = dead), client,
-- host, pid, label, value (an election candidate's value; '' for other kinds)}; at most 1000
-- rows.
expect_base()
local Q = KEYS[3]
expect_type(Q, 'zset')
local holders = {}
local kind = kind_of(Q)
if kind == 'rwlock' or kind == 'semaphore' then
  local hk = holders_key(Q)
  if redis.call('TYPE', hk)['ok'] == 'zset' then
    for _, m in ipairs(redis.call('ZRANGE', hk, 0, 1000)) do
      if lease_left(lease_of(m) or '') then holders[m] = true end
    end
  end
else
  local head = live_head(Q, false, 1000)
  if head then holders[head] = true end
end
local values = nil
if is_election(Q) then
  local vk = election_keys(Q)
  if redis.call('TYPE', vk)['ok'] == 'hash' then values = vk end
end
local out = {}
local rows = redis.call('ZRANGE', Q, 0, 999, 'WITHSCORES')
for i = 1, #rows, 2 do
  local m = rows[i]
  local lease = lease_of(m) or ''
  local left = lease_left(lease) or 0
  local f = { false, false, false, false }
  local lk = lease_key(lease)
  if redis.call('TYPE', lk)['ok'] == 'hash' then
    f = redis.call('HMGET', lk, 'client', 'host', 'pid', 'label')
  end
  -- A score that is not a revision (foreign data) is shown as 0.
  local token = uint_of(rows[i + 1]) or 0
  local value = values and redis.call('HGET', values, m) or ''
  out[#out + 1] = { m, int(token), holders[m] and 1 or 0, left, f[1] or '', f[2] or '',
    f[3] or '', f[4] or '', value or '' }
end
return out
