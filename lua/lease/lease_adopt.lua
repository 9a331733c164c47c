-- Take over an existing lease in a new session (SessionOptions::lease, e.g. after a restart;
-- see src/session.rs): renew it, make this client's doorbell the one that rings for it, and
-- release the lock entries (mutex, rwlock, semaphore, double barrier) it holds or waits with:
-- the guards and waits that owned them died with the old process, and nothing could release
-- them otherwise. Election candidacies (one per lease, resumable by design) and keys stay.
-- A lease may hold any number of entries, so one call looks at a bounded number of them
-- (SSCAN steps, DROP_SCAN entries at most) and the caller repeats the call with the cursor
-- it got until the cursor is 0. Only entries queued before the takeover (revision <= the
-- takeover's) are released, so an entry the new session queued meanwhile stays.
-- KEYS: rev, leases, lease:<id>, attached:<id>
-- ARGV: id, client id[, takeover revision, cursor: a later call that goes on releasing]
-- Returns {TTL in ms, takeover revision, next cursor ('0' when done)}, or {-1} when the lease
-- is not alive (or, on a later call, no longer this client's). The client that used the lease
-- until now is told ('a <lease>' on its doorbell), and its renewals are answered "adopted".
expect_base()
local LK, AK = KEYS[3], KEYS[4]
local id, client = ARGV[1], ARGV[2]
expect_lease_keys(id)
if not lease_left(id) or redis.call('EXISTS', LK) == 0 then return { -1 } end
local ttl = ttl_of(redis.call('HGET', LK, 'ttl'))
if not ttl then return { -1 } end
local upto, cursor
if ARGV[3] then
  upto, cursor = uint_of(ARGV[3]), ARGV[4]
  if not upto or not cursor or not string.match(cursor, '^%d+$') then
    fail('ARG', 'bad takeover revision or cursor')
  end
  if redis.call('HGET', LK, 'client') ~= client then return { -1 } end
else
  upto, cursor = rev_now, '0'
  redis.call('PEXPIRE', LK, int(ttl))
  redis.call('ZADD', REG, 'XX', int(NOW_MS + ttl), id)
  -- The client that used the lease until now learns at once that its session is over.
  ring(id, 'a ' .. id, client)
  redis.call('HSET', LK, 'client', client, 'owner_rings', client, 'fenced_rings', client)
end
local locks = { mutex = true, rwlock = true, semaphore = true, dbarrier = true }
local DROP_SCAN = 64
local seen = 0
repeat
  local step = redis.call('SSCAN', AK, cursor, 'COUNT', 64)
  cursor = step[1]
  for _, e in ipairs(step[2]) do
    local kind, member, key = entry_parts(e)
    if kind == 'w' then
      redis.call('SREM', AK, e)
    elseif kind == 'z' and owned(key) and locks[kind_of(key)]
        and redis.call('TYPE', key)['ok'] == 'zset' then
      local score = tonumber(redis.call('ZSCORE', key, member))
      if not score or score <= upto then
        leave_queue(key, member)
        redis.call('SREM', AK, e)
      end
    end
  end
  seen = seen + #step[2]
until cursor == '0' or seen >= DROP_SCAN
return { ttl, int(upto), cursor }
