-- leasehold's core prelude: prepended at compile time to every script in this directory.
-- Most scripts also get lua/prelude/queues.lua after it (helpers for every kind of queue,
-- elections, revoke and sweep); the lock hot path (mutex_acquire, mutex_release) gets only this
-- file, because Redis runs a script's whole text on every call: each helper defined here is
-- paid by every call of every script, so this file keeps to what the hot path needs.
--
-- Conventions shared by all scripts:
--   KEYS[1] = {ns}:rev     revision counter (fencing tokens come from here)
--   KEYS[2] = {ns}:leases  zset lease id -> server expiry in ms (the registry)
-- Every other key a script touches carries the same `{ns}:` prefix, so one script stays in one
-- Cluster slot. Keys discovered at run time (another contender's lease hash, an attachment set)
-- are only touched when they start with that prefix.
--
-- Errors a caller can act on are raised as `LH<CODE> <details>` and are raised before the first
-- write, so a rejected call leaves every key as it was. A key's type is checked by the first
-- command that touches it (`typed`), so every key must be touched once before the first write.
--
-- The same text runs two ways (src/redis/scripts.rs): as an EVALSHA script, prelude + body,
-- where Redis runs it all on every call; and as one function library (FUNCTION LOAD), where
-- the preludes run once at load and each body is a function. So nothing here may touch KEYS,
-- ARGV or Redis at load time: each call starts with begin(KEYS), which sets what is per call
-- (the keys, the time, the per-run memos below), and the library's upvalues carry nothing from
-- one call to the next.

-- Per call (set by begin): the call's keys, the revision counter and registry keys, the
-- namespace prefix "{ns}:", and the server time (TIME's reply, in µs and in ms).
local K, REV, REG, P, T, NOW_US, NOW_MS

-- Sharded pub/sub (Redis >= 7) keeps a doorbell message on the shard that owns the namespace
-- instead of broadcasting it to every node of a cluster; the client subscribes to match
-- (src/redis/shared.rs decides the same way: by whether the server knows SSUBSCRIBE).
local PUBLISH = (redis.REDIS_VERSION_NUM or 0) >= 0x070000 and 'SPUBLISH' or 'PUBLISH'
local function publish(channel, msg)
  redis.call(PUBLISH, channel, msg)
end

-- Raise the error reply `text`. Redis 6.2's error handler concatenates what error() raises, so
-- there it must be a string (Redis then prefixes it with the script and line;
-- src/redis/classify.rs reads past that). REDIS_VERSION_NUM exists from Redis 7.0 on.
local function raise(text)
  if redis.REDIS_VERSION_NUM then error({ err = text }) end
  error(text, 0)
end

local function fail(code, msg)
  raise('LH' .. code .. ' ' .. msg)
end

local function int(n)
  return string.format('%d', n)
end

-- Largest integer a Lua number holds exactly: revisions and times stay below it.
local MAX_SAFE = 9007199254740991
-- Longest lease TTL (MAX_TTL in src/base/limits.rs).
local MAX_TTL_MS = 86400000

-- Foreign data may put anything where a number belongs, and Lua's tonumber accepts "nan",
-- "inf", "1e300" and " 12": these helpers accept only what leasehold itself writes.

-- `s` as a whole number in 0..MAX_SAFE written in digits, or nil.
local function uint_of(s)
  if type(s) ~= 'string' or #s > 16 or not string.match(s, '^%d+$') then return nil end
  local n = tonumber(s)
  if n > MAX_SAFE then return nil end
  return n
end

-- A UUID in the hyphenated form lease ids are written in (src/lease/leases.rs).
-- (A literal: building it with string.rep cost every call of every script.)
local UUID = '^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$'
local function is_lease_id(s)
  return type(s) == 'string' and string.match(s, UUID) ~= nil
end

-- Run a command on `key` as redis.call does, except that a key holding another type than
-- `want` raises LHWRONGTYPE naming the key instead of Redis's anonymous WRONGTYPE. The same
-- cost as redis.call: a TYPE round is paid only when it fails.
local function typed(key, want, ...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 9) == 'WRONGTYPE' then
      fail('WRONGTYPE', redis.call('TYPE', key)['ok'] .. ' ' .. want .. ' ' .. key)
    end
    raise(r.err)
  end
  return r
end

-- The revision counter as this run last read or wrote it (read_rev reads it).
local rev_now = nil

-- Read and validate the revision counter (the first thing every script does). Read once per
-- run: every later write goes through set_rev, which keeps rev_now current (so the calls of a
-- batch, lua/lock/mutex_batch.lua, share one read).
local function read_rev()
  if rev_now then return end
  local cur = typed(REV, 'string', 'GET', REV)
  if cur and not uint_of(cur) then
    fail('CORRUPT', 'revision counter is not a number: ' .. REV)
  end
  rev_now = tonumber(cur or '0')
end

-- Next store revision: max(old + 1, server time in microseconds), so it keeps rising even when
-- a restart or failover lost the counter.
-- A batch (lua/lock/mutex_batch.lua, through begin_batch) sets rev_deferred and writes the counter
-- once, at its end.
local rev_bumped, rev_deferred = nil, false
local function set_rev(n)
  if not rev_deferred then redis.call('SET', REV, int(n)) end
  rev_now, rev_bumped = n, n
end

local function next_rev()
  if not rev_now and not rev_deferred then
    -- The counter not read yet (the lock hot path reads it only here): read and write it in
    -- one command, guessing that the clock is ahead of it, as it is unless two revisions fall
    -- in one microsecond or the clock stepped back. A guess that was wrong is written again,
    -- and a counter that was not a number is put back before failing: either way the run's
    -- writes are as if it had read first.
    local old = typed(REV, 'string', 'SET', REV, int(NOW_US), 'GET')
    if old and not uint_of(old) then
      redis.call('SET', REV, old, 'KEEPTTL')
      fail('CORRUPT', 'revision counter is not a number: ' .. REV)
    end
    local nxt = tonumber(old or '0') + 1
    if NOW_US > nxt then nxt = NOW_US else redis.call('SET', REV, int(nxt)) end
    rev_now, rev_bumped = nxt, nxt
    return nxt
  end
  if not rev_now then read_rev() end
  local nxt = rev_now + 1
  if NOW_US > nxt then nxt = NOW_US end
  set_rev(nxt)
  return nxt
end

-- Bump the revision at most once per script run (for changes that are not themselves ordered).
local function touch_rev()
  if not rev_bumped then next_rev() end
end

local function lease_key(id) return P .. 'lease:' .. id end
local function attached_key(id) return P .. 'attached:' .. id end

-- Milliseconds the lease has left by the registry, or nil when it is not alive. A registry
-- member that is not a lease id is foreign data and never alive; a score beyond any TTL (say
-- +inf) counts as MAX_TTL_MS, so callers always get a number they can return.
-- The hot scripts check their caller's lease first and remember the answer (own_lease_left),
-- so that finding the caller at the head of a queue costs no second lookup. They do not write
-- the registry, which would make it stale.
-- A batch of lock calls (lua/lock/mutex_batch.lua, which never writes the registry either) sets
-- lease_memo to a table (begin_batch), so that one lookup per lease serves every call of the
-- batch: the locks of one session, or waiters behind one head. NOW_MS is the same for the
-- whole run.
local own_id, own_left = nil, nil
local lease_memo = nil
-- Milliseconds left by a registry score (as ZSCORE or ZMSCORE gives it, false when absent).
local function left_of_score(s)
  local left = s and tonumber(s) - NOW_MS
  if not (left and left > 0) then return nil end
  return math.min(left, MAX_TTL_MS)
end
-- The registry's answer for lease `id`: ms left, or nil (remembered for the rest of a batch).
local function registry_left(id)
  if lease_memo then
    local known = lease_memo[id]
    if known ~= nil then return known or nil end
  end
  local left = left_of_score(typed(REG, 'zset', 'ZSCORE', REG, id))
  if lease_memo then lease_memo[id] = left or false end
  return left
end

local function lease_left(id)
  if id == own_id then return own_left end
  if not is_lease_id(id) then return nil end
  return registry_left(id)
end

-- The caller's own lease. Its id comes from the caller, who names its own contender and keys
-- with it (the scripts check that they match), so it skips is_lease_id: that pattern match is
-- the costliest Lua step of a lock call after the commands themselves.
local function own_lease_left(id)
  own_left = registry_left(id)
  own_id = id
  return own_left
end

-- The start of every call: what is per call, set afresh.
local function begin(keys)
  K, REV, REG = keys, keys[1], keys[2]
  P = string.sub(REV, 1, -4)
  T = redis.call('TIME')
  NOW_US = tonumber(T[1]) * 1000000 + tonumber(T[2])
  NOW_MS = math.floor(NOW_US / 1000)
  rev_now, rev_bumped, rev_deferred = nil, nil, false
  own_id, own_left, lease_memo = nil, nil, nil
end

-- For lua/lock/mutex_batch.lua, once, before its calls: read the revision counter, then defer its
-- write (set_rev) and remember each lease's lookup (lease_memo) for the rest of the run.
-- Returns `next_call`, to run before each call (it forgets what a script run remembers about
-- itself: its revision bump and its own lease), and `finish`, to run after the last one (it
-- writes the counter once, if it moved).
local function begin_batch()
  read_rev()
  local rev_start = rev_now
  rev_deferred, lease_memo = true, {}
  local function next_call() rev_bumped, own_id, own_left = nil, nil, nil end
  local function finish()
    if rev_now ~= rev_start then redis.call('SET', REV, int(rev_now)) end
  end
  return next_call, finish
end

-- A contender (queue member) is "<lease id>.<suffix>".
local function lease_of(member)
  return string.match(member, '^([^.]+)%.')
end

-- Doorbell: one channel per client process; the lease hash names the client that renews it.
-- No message when that client is `unless_client` (it told us it needs none). With `owner_msg`
-- (an 'o <member> <revision>' ring, see ring_turn), that message goes instead when the client
-- is one that understands it: the lease hash's fenced_rings field names such a client. A client
-- whose owner_rings field names it (one that takes 'o <member>' without the revision) gets
-- that form; any other client (one that adopted the lease later, changing `client` only) gets
-- `msg`.
local function ring(lease, msg, unless_client, owner_msg, revision)
  -- A queue member without a lease part (foreign data) has no doorbell.
  if not lease then return end
  -- pcall: foreign data at the lease key (not a hash) means no doorbell, not an error.
  local f = redis.pcall('HMGET', lease_key(lease), 'client', 'owner_rings', 'fenced_rings')
  if type(f) ~= 'table' or f.err then return end
  local client = f[1]
  if type(client) == 'string' and client ~= unless_client then
    if owner_msg and f[3] == client then
      msg = owner_msg .. ' ' .. int(revision)
    elseif owner_msg and f[2] == client then
      msg = owner_msg
    end
    publish(P .. 'wake:' .. client, msg)
  end
end

-- Member `m` (at revision `score`) of queue `q` may have just become an owner: wake it. A
-- mutex's live head owns it outright, so its waiter takes the lock without asking again
-- ('o <member> <revision>': the waiter checks the revision against its own entry's, so a stray
-- or stale ring only makes it ask); other kinds' waiters re-check ('c <member>').
local function ring_turn(q, m, score)
  if string.sub(q, #P + 1, #P + 6) == 'mutex:' then
    ring(lease_of(m), 'c ' .. m, nil, 'o ' .. m, score)
  else
    ring(lease_of(m), 'c ' .. m)
  end
end

-- Lock-delay (Consul's, Chubby's): a mutex contender made with a delay carries it in its id,
-- "<lease>.d<ms>-<random>" (src/sync/mutex.rs). When its lease ends while it owns the mutex
-- (expired or revoked; not an unlock while alive, nor an adoption), its entry is replaced in place by a
-- placeholder "<hold>.delay" whose lease <hold> lives until `died` + the delay: every waiter
-- sees a live holder and re-checks when that runs out, as behind any holder. <hold> is the
-- dead lease's id with UUID version 0 (real leases are version 7) and the delay in its last 12
-- hex digits; it has no hash and nobody renews it, so the next walk or sweep removes it.
-- Returns whether it replaced the entry (false: no delay, or it is over already).
local MAX_LOCK_DELAY_MS = 60000
local function delay_hold(q, member, score, died)
  if not died or string.sub(q, #P + 1, #P + 6) ~= 'mutex:' then return false end
  local ms = uint_of(string.match(member, '^[^.]+%.d(%d+)%-') or '')
  if not ms or ms == 0 or ms > MAX_LOCK_DELAY_MS or died + ms <= NOW_MS then return false end
  local lease = lease_of(member)
  local hold = string.sub(lease, 1, 14) .. '0' .. string.sub(lease, 16, 24)
    .. string.format('%012x', ms)
  local placeholder, hk = hold .. '.delay', attached_key(hold)
  -- Foreign data where the placeholder's attachments go: no delay, nothing written.
  local ht = redis.call('TYPE', hk)['ok']
  if ht ~= 'none' and ht ~= 'set' then return false end
  redis.call('ZADD', REG, 'GT', int(died + ms), hold)
  if lease_memo then lease_memo[hold] = nil end
  redis.call('SADD', hk, 'z ' .. placeholder .. ' ' .. q)
  redis.call('ZADD', q, int(score), placeholder)
  redis.call('ZREM', q, member)
  -- The first live waiter re-checks now, to learn how long the placeholder holds (a revoke's
  -- hand-over would have rung it; an expiry it found itself).
  local behind = redis.call('ZRANGE', q, '1', '16')
  for _, m in ipairs(behind) do
    local l = lease_of(m)
    if l and lease_left(l) then
      ring(l, 'c ' .. m)
      break
    end
  end
  return true
end

-- When the lease of queue member `m` died, by the registry (its expiry), or now; nil when it
-- ended cleanly (its own client revoked it while alive: score -1, see drop_lease).
local function died_at(m)
  local expiry = tonumber(redis.call('ZSCORE', REG, lease_of(m) or '') or '0') or 0
  if expiry == -1 then return nil end
  if expiry > 0 and expiry <= NOW_MS then return expiry end
  return NOW_MS
end

-- First member of queue `q` whose lease is alive, with its ms left and its score. With `prune`,
-- dead members met on the way are removed; a dead mutex owner with a lock-delay at the front
-- is replaced by its placeholder instead (delay_hold), unless its score is `after` or more
-- (it was behind an entry just released while alive: it never owned). At most `limit` dead
-- members are looked at, so one call stays short; the fourth result is true when that limit
-- cut the walk short.
local function live_head(q, prune, limit, after)
  local start, seen = 0, 0
  while true do
    -- Strings, not numbers: Redis formats a Lua number argument with sprintf, which costs more
    -- than the ZRANGE itself.
    local from, to = '0', '15'
    if start > 0 then from, to = int(start), int(start + 15) end
    local batch = typed(q, 'zset', 'ZRANGE', q, from, to, 'WITHSCORES')
    if #batch == 0 then return nil, nil, nil, false end
    for i = 1, #batch, 2 do
      local m = batch[i]
      local left = lease_left(lease_of(m) or '')
      if left then return m, left, tonumber(batch[i + 1]), false end
      seen = seen + 1
      local score = tonumber(batch[i + 1])
      -- Pruning writes, and moves the revision counter: check the counter first (the lock hot
      -- path reads it only when it queues), so that a bad one fails before any write.
      if prune and not rev_now then read_rev() end
      if prune and (not after or score < after) and string.find(m, '^[^.]+%.d')
        and delay_hold(q, m, score, died_at(m)) then
        return live_head(q, prune, limit, after)
      end
      if prune then
        redis.call('ZREM', q, m)
        if string.sub(q, #P + 1, #P + 9) == 'election:' then
          local vk = P .. 'election-values:' .. string.sub(q, #P + 10)
          if redis.call('TYPE', vk)['ok'] == 'hash' then redis.call('HDEL', vk, m) end
        end
        touch_rev()
      end
      if seen >= limit then return nil, nil, nil, true end
    end
    if not prune then start = start + #batch / 2 end
  end
end

-- Dead member `m` (at `score`) of mutex queue `q` leaves without an unlock (its lease died at
-- `died`): if no live entry is ahead of it, it owned, and its lock-delay holds the lock on
-- (delay_hold). Returns whether it did.
local function delay_if_owner(q, m, score, died)
  if not died or not string.find(m, '^[^.]+%.d') then return false end
  local _, _, head_score = live_head(q, false, 64)
  if head_score and head_score < score then return false end
  return delay_hold(q, m, score, died)
end

-- Attachment entries, in {ns}:attached:<lease> (no TTL: the registry is authoritative, and
-- every registry entry is swept in the end):
--   "z <member> <key>"  a member of the zset <key> (mutex queue entry, candidacy, permit, ...)
--   "k <key>"           a key that lives as long as the lease
--   "w <member>"        tombstone: <member> was withdrawn before it was ever queued (a
--                       cancelled wait whose withdrawal overtook its request on another
--                       connection); a later request for it is refused
local function attach(lease, akey, entry)
  typed(akey, 'set', 'SADD', akey, entry)
end

-- Whether a release of `member` for revision `want` (0 = whatever revision it has) applies to
-- its queue entry, scored `score` (nil: there is none). A release for whatever revision that
-- finds no entry while the lease is alive is a withdrawal that overtook its own request (on
-- another connection): it leaves a tombstone, so that the request cannot queue later.
local function may_release(score, akey, lease, member, want)
  if not score then
    if want == 0 and lease_left(lease) then typed(akey, 'set', 'SADD', akey, 'w ' .. member) end
    return false
  end
  return want == 0 or score == want
end

-- True (and the tombstone consumed) when `member` was withdrawn before it was queued.
local function tombstoned(akey, member)
  return typed(akey, 'set', 'SREM', akey, 'w ' .. member) == 1
end

