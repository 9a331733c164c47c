-- Take over an existing lease in a new session (SessionOptions::lease, e.g. after a restart;
-- see src/session.rs): renew it, make this client's doorbell the one that rings for it, and
-- release the lock entries (mutex, rwlock, semaphore, double barrier) it holds or waits with:
-- the guards and waits that owned them died with the old process, and nothing could release
-- them otherwise. Election candidacies (one per lease, resumable by design) and keys stay.
-- KEYS: rev, leases, lease:<id>, attached:<id>
-- ARGV: id, client id
-- Returns the TTL in ms, or -1 when the lease is not alive. The client that used the lease is
-- told ('a <lease>' on its doorbell), and its renewals are answered "adopted" from now on.
expect_base()
local LK, AK = KEYS[3], KEYS[4]
local id = ARGV[1]
expect_lease_keys(id)
if not lease_left(id) or redis.call('EXISTS', LK) == 0 then return -1 end
local ttl = ttl_of(redis.call('HGET', LK, 'ttl'))
if not ttl then return -1 end
redis.call('PEXPIRE', LK, int(ttl))
redis.call('ZADD', REG, 'XX', int(NOW_MS + ttl), id)
-- The client that used the lease until now learns at once that its session is over.
ring(id, 'a ' .. id, ARGV[2])
redis.call('HSET', LK, 'client', ARGV[2], 'owner_rings', ARGV[2], 'fenced_rings', ARGV[2])
local locks = { mutex = true, rwlock = true, semaphore = true, dbarrier = true }
for _, e in ipairs(redis.call('SMEMBERS', AK)) do
  if string.sub(e, 1, 2) == 'w ' then
    redis.call('SREM', AK, e)
  elseif string.sub(e, 1, 2) == 'z ' then
    local sp = string.find(e, ' ', 3, true)
    if sp then
      local key = string.sub(e, sp + 1)
      if owned(key) and locks[kind_of(key)] and redis.call('TYPE', key)['ok'] == 'zset' then
        leave_queue(key, string.sub(e, 3, sp - 1))
        redis.call('SREM', AK, e)
      end
    end
  end
end
return ttl
