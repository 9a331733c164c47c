-- leasehold's queue prelude: prepended after lua/prelude/core.lua to every script except the lock
-- hot path (see src/redis/scripts.rs): elections, shared-ownership queues (rwlock, semaphore,
-- double barrier), keys put with a lease, leaving any kind of queue, revoke and sweep.

-- Checks of the keys and arguments the scripts off the hot path are given.

-- A lease TTL field as a number of ms in 1..MAX_TTL_MS, or nil.
local function ttl_of(s)
  local n = uint_of(s)
  if n and n >= 1 and n <= MAX_TTL_MS then return n end
  return nil
end

-- Raise unless `key` is absent or of Redis type `want`.
local function expect_type(key, want)
  local got = redis.call('TYPE', key)['ok']
  if got ~= 'none' and got ~= want then
    fail('WRONGTYPE', got .. ' ' .. want .. ' ' .. key)
  end
end

-- Validate the revision counter and the registry.
local function expect_base()
  read_rev()
  expect_type(REG, 'zset')
end

-- The single-lease scripts get KEYS rev, leases, lease:<id>, attached:<id>: check them.
local function expect_lease_keys(id)
  if K[3] ~= lease_key(id) or K[4] ~= attached_key(id) then
    fail('ARG', 'keys do not match lease ' .. id)
  end
  expect_type(K[3], 'hash')
  expect_type(K[4], 'set')
end

-- Raise LHARG unless contender `member` and the attachment key `akey` are `lease`'s. `what`
-- names the member in the message ('contender', 'candidate', 'participant'). (mutex_acquire
-- and mutex_release write the same check out: a helper in the core prelude measured about 2%
-- more time per lock call.)
local function expect_member(lease, member, akey, what)
  if lease_of(member) ~= lease or akey ~= attached_key(lease) then
    fail('ARG', what .. ' does not match lease ' .. lease)
  end
end

-- Whether `key` is in this namespace: keys named by data are only touched then.
local function owned(key)
  return string.sub(key, 1, #P) == P
end

-- A member with score `score` left queue `q` (released, revoked, expired or pruned): if the live
-- head now stands behind it, the head may have just become owner, so ring its doorbell.
-- One message per handoff; a head that already owned is never behind a member that left.
-- Returns the live head's score, or nil when the queue has no live member.
local function handoff(q, score)
  local m, _, s = live_head(q, true, 64)
  if m and s >= score then ring_turn(q, m, s) end
  return s
end

-- Elections: {ns}:election:<name> is the queue (head = leader), with the candidates' values in
-- {ns}:election-values:<name> and a log of leader changes in the stream
-- {ns}:election-log:<name> (entry id = revision). Every script that may change who leads, or
-- the leader's value, ends with election_sync, which appends to the log only when the live
-- head differs from the last entry; so the log is complete and self-healing.
local ELECTION = 'election:'
-- The log keeps at most LOG_CAP entries (roughly: trimmed with MAXLEN ~) and LOG_BYTES bytes
-- of values (ELECTION_LOG_BYTES in src/base/limits.rs); an observer that falls further
-- behind is told it missed entries (trimming: log_append).
local LOG_CAP = 1000
local LOG_BYTES = 8388608
-- A log whose election has no candidates left is kept this long for late observers.
local IDLE_LOG_MS = 3600000

local function is_election(q)
  return string.sub(q, #P + 1, #P + #ELECTION) == ELECTION
end

local function election_keys(q)
  local name = string.sub(q, #P + #ELECTION + 1)
  return P .. 'election-values:' .. name, P .. 'election-log:' .. name,
    P .. 'election-changes:' .. name
end

-- The revision (ms part) of the log's last entry id: 0 when the log is empty, nil when a
-- foreign entry's id is beyond any revision (no entry can be appended after it).
local function log_top(lk)
  local last = redis.call('XREVRANGE', lk, '+', '-', 'COUNT', 1)[1]
  if not last then return 0, nil end
  return uint_of(string.match(last[1], '^(%d+)%-')), last
end

-- The election scripts get KEYS rev, leases, election:<name>, election-values:<name>,
-- election-log:<name>: check them.
local function expect_election_keys()
  local q, vk, lk = K[3], K[4], K[5]
  local evk, elk = election_keys(q)
  if not is_election(q) or vk ~= evk or lk ~= elk then fail('ARG', 'keys do not match election ' .. q) end
  expect_type(q, 'zset')
  expect_type(vk, 'hash')
  expect_type(lk, 'stream')
  if not log_top(lk) then fail('CORRUPT', 'log entry id beyond any revision: ' .. lk) end
end

-- Fields of a log entry as a table.
local function entry_fields(e)
  local f = {}
  local kv = e[2]
  for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
  return f
end

-- Append entry `id` with `fields` (a flat list, the value under field `vf`) to the log stream
-- `lk`, whose last entry is `last`, keeping at most `cap` entries (MAXLEN ~) and `cap_bytes`
-- bytes of values: the elections' logs and the key event log. Each entry carries `at`, the
-- log's byte total of values up to and including it, so trimming by bytes reads only the
-- entries it removes: oldest first, never the entry just written; an entry without `at`
-- (foreign data) counts as the oldest bytes.
local function log_append(lk, last, id, fields, vf, cap, cap_bytes)
  local value = ''
  for i = 1, #fields, 2 do
    if fields[i] == vf then value = fields[i + 1] end
  end
  local at = #value + ((last and uint_of(entry_fields(last).at)) or 0)
  fields[#fields + 1] = 'at'
  fields[#fields + 1] = int(at)
  redis.call('XADD', lk, 'MAXLEN', '~', cap, id, unpack(fields))
  for _ = 1, cap do
    local first = redis.call('XRANGE', lk, '-', '+', 'COUNT', 1)[1]
    if not first or first[1] == id then break end
    local f = entry_fields(first)
    if at - (uint_of(f.at) or 0) + #(f[vf] or '') <= cap_bytes then break end
    redis.call('XDEL', lk, first[1])
  end
end

local function election_sync(q)
  local vk, lk, ck = election_keys(q)
  local vt, lt = redis.call('TYPE', vk)['ok'], redis.call('TYPE', lk)['ok']
  -- Foreign data at these keys: leave it alone (callers that write check types up front).
  if (vt ~= 'none' and vt ~= 'hash') or (lt ~= 'none' and lt ~= 'stream') then return end
  local head, _, score = live_head(q, true, 64)
  local member = head or ''
  local value = ''
  if head then value = redis.call('HGET', vk, head) or '' end
  local token = int(score or 0)
  local top, last = log_top(lk)
  -- A foreign entry no revision can follow: leave the log alone (callers that write check
  -- this up front; a revoke or sweep must not fail on it).
  if not top then return end
  local prev = '0-0'
  if last then
    prev = last[1]
    local f = entry_fields(last)
    if f.member == member and f.value == value and f.token == token then return end
  elseif not head then
    return
  end
  local rev = next_rev()
  if rev <= top then
    -- A foreign entry ahead of the counter: entry ids must keep rising, so revisions jump.
    rev = top + 1
    set_rev(rev)
  end
  log_append(lk, last, int(rev) .. '-0',
    { 'member', member, 'value', value, 'token', token, 'prev', prev }, 'value', LOG_CAP,
    LOG_BYTES)
  if head then
    redis.call('PERSIST', lk)
  else
    redis.call('PEXPIRE', lk, IDLE_LOG_MS)
  end
  publish(ck, int(rev))
end

-- Queues with shared ownership. {ns}:rwlock:<name> members are "<lease>.r<id>" (reader) or
-- "<lease>.w<id>" (writer); {ns}:semaphore:<name> members are "<lease>.<permits>.<id>", with
-- the size in {ns}:semaphore-size:<name>. Both are FIFO: entries are admitted as owners in
-- queue order while they fit (a writer when nobody holds, a reader when no writer holds, a
-- semaphore entry when its permits fit in what the holders leave of the size), so nobody
-- overtakes a waiting entry.
local function kind_of(q)
  local rest = string.sub(q, #P + 1)
  return string.match(rest, '^([%a-]+):')
end

-- The holders of shared queue `q` (see admit).
local function holders_key(q)
  local kind = kind_of(q)
  return P .. kind .. '-holders:' .. string.sub(q, #P + #kind + 2)
end

local function semaphore_size_key(q)
  return P .. 'semaphore-size:' .. string.sub(q, #P + #'semaphore:' + 1)
end

-- The size of semaphore queue `q`; 0 (admit nobody) when the size key holds foreign data,
-- so a revoke or sweep never fails half-way on it.
local function semaphore_size(q)
  local sk = semaphore_size_key(q)
  if redis.call('TYPE', sk)['ok'] ~= 'string' then return 0 end
  return uint_of(redis.call('GET', sk)) or 0
end

local function permits_of(member)
  return tonumber(string.match(member, '^[^.]+%.(%d+)%.')) or 1
end

-- Delete `key` if it holds a string (leasehold's own side keys); foreign data stays.
local function del_string(key)
  if redis.call('TYPE', key)['ok'] == 'string' then redis.call('DEL', key) end
end

-- A queue's last entry went: remove its side keys (semaphore size, double-barrier round flag).
local function queue_emptied(q, kind)
  if kind == 'semaphore' or kind == 'rwlock' then
    local hk = holders_key(q)
    if redis.call('TYPE', hk)['ok'] == 'zset' then redis.call('DEL', hk) end
  end
  if kind == 'semaphore' then
    del_string(semaphore_size_key(q))
  elseif kind == 'dbarrier' then
    del_string(P .. 'dbarrier-ready:' .. string.sub(q, #P + #'dbarrier:' + 1))
  end
end

-- Owners of a shared queue (rwlock, semaphore) are kept in a second zset,
-- {ns}:<kind>-holders:<name>, with the same scores. They are admitted in queue order, so they
-- are always a prefix of the queue and the first waiter is the queue's entry at the rank of
-- the holders' count: no call walks the holders, whatever their number. A semaphore's holders
-- zset also keeps the permits they hold, as the score of member USED (a member name no
-- contender can have: contenders start with a lease id). Should the holders zset vanish
-- (FLUSHALL, a foreign DEL), the next call admits the queue's front again.
local USED = '#used'
-- Entries one call admits at most; when more could be admitted, the next waiter is rung and
-- its re-check admits the next ones.
local ADMIT_BATCH = 128

-- Whether the holders key of `q` may be used (absent or a zset: foreign data is left alone).
local function holders_usable(hk)
  local t = redis.call('TYPE', hk)['ok']
  return t == 'zset' or t == 'none'
end

local function holder_count(hk)
  local n = redis.call('ZCARD', hk)
  if n > 0 and redis.call('ZSCORE', hk, USED) then n = n - 1 end
  return n
end

local function used_permits(hk)
  return tonumber(redis.call('ZSCORE', hk, USED) or '0')
end

local function is_writer(m)
  return string.match(m, '^[^.]+%.(.)') == 'w'
end

-- Admit the waiters of shared queue `q` that may own now, in queue order, at most
-- ADMIT_BATCH; each is rung, except `caller` (it reads the answer of its own call). Dead
-- waiters met at the front are removed (at most 64).
local function admit(q, kind, caller)
  local hk = holders_key(q)
  if not holders_usable(hk) then return end
  local n = holder_count(hk)
  local size = kind == 'semaphore' and semaphore_size(q) or 0
  local used = kind == 'semaphore' and used_permits(hk) or 0
  -- A writer holds alone, so it is the first holder if any holds.
  local writer_holds = kind == 'rwlock' and n > 0 and is_writer(redis.call('ZRANGE', hk, 0, 0)[1])
  local dead, admitted = 0, 0
  while true do
    -- The first waiter: the holders are the queue's first n entries.
    local w = redis.call('ZRANGE', q, n, n, 'WITHSCORES')
    if #w == 0 then break end
    local m = w[1]
    if not lease_left(lease_of(m) or '') then
      redis.call('ZREM', q, m)
      touch_rev()
      dead = dead + 1
      if dead >= 64 then break end
    else
      local fits
      if kind == 'rwlock' then
        fits = not writer_holds and (n == 0 or not is_writer(m))
      else
        fits = used + permits_of(m) <= size
      end
      if not fits then break end
      if admitted >= ADMIT_BATCH then
        ring(lease_of(m), 'c ' .. m)
        break
      end
      redis.call('ZADD', hk, w[2], m)
      if m ~= caller then ring(lease_of(m), 'c ' .. m) end
      n, admitted = n + 1, admitted + 1
      writer_holds = kind == 'rwlock' and is_writer(m)
      used = used + permits_of(m)
    end
  end
  if kind == 'semaphore' and admitted > 0 then redis.call('ZADD', hk, int(used), USED) end
  if dead > 0 and redis.call('ZCARD', q) == 0 then queue_emptied(q, kind) end
end

-- Live holders among the first few of shared queue `q`: the dead ones met (expired, not
-- swept yet) leave the queue, which admits whoever stood behind them. Returns the smallest
-- lease time left among the live ones looked at (0 when none): when a waiter should ask again
-- if nothing rings it first.
local leave_queue
local function settle(q)
  local hk = holders_key(q)
  if redis.call('TYPE', hk)['ok'] ~= 'zset' then return 0 end
  local best = 0
  for _, m in ipairs(redis.call('ZRANGE', hk, 0, 16)) do
    if m ~= USED then
      local left = lease_left(lease_of(m) or '')
      if not left then
        leave_queue(q, m)
      elseif best == 0 or left < best then
        best = left
      end
    end
  end
  return best
end

-- Whether `member` of shared queue `q` owns, by the server's view: admitted and alive.
local function holds(q, member)
  local hk = holders_key(q)
  if redis.call('TYPE', hk)['ok'] ~= 'zset' then return false end
  return redis.call('ZSCORE', hk, member) ~= false and lease_left(lease_of(member) or '') ~= nil
end

-- The turn of `member` in shared queue `q` of `kind`: let go of dead holders, admit whoever
-- may own now. Returns whether `member` holds, and the smallest lease time left among the
-- holders looked at (when a waiter should ask again if nothing rings it first).
local function shared_turn(q, kind, member)
  local left = settle(q)
  admit(q, kind, member)
  return holds(q, member), left
end

-- Whether `member` owns lock queue `q` (mutex, rwlock or semaphore) by the server's view.
local function owns_now(q, member)
  local kind = kind_of(q)
  if kind == 'rwlock' or kind == 'semaphore' then return holds(q, member) end
  return live_head(q, false, 64) == member
end

-- Participants of double barrier `q` (all of its entries own): the dead ones among the first
-- 64 are removed; one further back counts until a sweep removes it (any client's renewal
-- sweeps expired leases). Returns their count and the smallest lease time left among the live
-- ones looked at.
local function participants(q)
  local best, dead = 0, {}
  for _, m in ipairs(redis.call('ZRANGE', q, 0, 63)) do
    local left = lease_left(lease_of(m) or '')
    if not left then
      dead[#dead + 1] = m
    elseif best == 0 or left < best then
      best = left
    end
  end
  for _, m in ipairs(dead) do redis.call('ZREM', q, m) end
  if #dead > 0 then touch_rev() end
  return redis.call('ZCARD', q), best
end

-- Keys put with a lease: {ns}:key:<key> is a hash {v, lease, crev, mrev, ver}, indexed in the
-- zset {ns}:keys (all scores 0, ordered by name) for prefix reads.
local KEYS_INDEX -- P .. 'keys', set by begin_queues
local KV = 'key:'

-- A revision or version field of key hash `k` as leasehold wrote it; a missing field reads as
-- 0, anything else is refused (only read paths call this, before any write).
local function kv_counter(k, s)
  if not s then return '0' end
  if not uint_of(s) then fail('CORRUPT', 'key has a revision that is not a number: ' .. k) end
  return s
end

-- Queue `member` of `lease` in lock queue `q` unless it is there already (or was withdrawn).
-- Returns its revision and whether this call created it, or nil when it was withdrawn.
local function join_queue(q, akey, lease, member)
  local rev = tonumber(redis.call('ZSCORE', q, member))
  if rev then return rev, false end
  if tombstoned(akey, member) then return nil, false end
  rev = next_rev()
  redis.call('ZADD', q, int(rev), member)
  attach(lease, akey, 'z ' .. member .. ' ' .. q)
  return rev, true
end

-- Undo a join_queue that created an entry (a try that did not get in).
local function leave_unjoined(q, akey, member)
  redis.call('ZREM', q, member)
  redis.call('SREM', akey, 'z ' .. member .. ' ' .. q)
end

-- The parts of attachment entry `e`: 'z', member, key for a queue entry; 'k', nil, key for a
-- key; 'w', member for a tombstone; nil for anything else (foreign data).
local function entry_parts(e)
  local tag = string.sub(e, 1, 2)
  if tag == 'z ' then
    local sp = string.find(e, ' ', 3, true)
    if sp and sp < #e then return 'z', string.sub(e, 3, sp - 1), string.sub(e, sp + 1) end
  elseif tag == 'k ' and #e > 2 then
    return 'k', nil, string.sub(e, 3)
  elseif tag == 'w ' then
    return 'w', string.sub(e, 3)
  end
  return nil
end

-- An attachment entry leasehold wrote ("z <member> <key>" or "k <key>"), not a tombstone or
-- foreign data.
local function is_attachment(e)
  return string.match(e, '^z [^ ]+ .') ~= nil or string.match(e, '^k .') ~= nil
end

-- Entries of attachment set `akey` (0 when it is not a set). O(1): it counts the rare
-- tombstones too, so it never reads as fewer attachments than a lease has.
local function attached_count(akey)
  if redis.call('TYPE', akey)['ok'] ~= 'set' then return 0 end
  return redis.call('SCARD', akey)
end

-- Double barriers: {ns}:dbarrier:<name> holds the participants (attached to their leases),
-- {ns}:dbarrier-ready:<name> exists from the moment the count was reached until all left, and
-- {ns}:dbarrier-changes:<name> is the observers' channel.
local function dbarrier_keys(q)
  local name = string.sub(q, #P + #'dbarrier:' + 1)
  return P .. 'dbarrier-ready:' .. name, P .. 'dbarrier-changes:' .. name
end

-- A participant left or died: when none are left the round is over.
local function dbarrier_changed(q)
  local ready, ch = dbarrier_keys(q)
  if redis.call('ZCARD', q) == 0 then del_string(ready) end
  publish(ch, int(rev_bumped or 0))
end

-- Remove a member from a queue zset: hand over, and log a leader change for elections.
leave_queue = function(q, member)
  local score = redis.call('ZSCORE', q, member)
  if not score then return false end
  score = tonumber(score)
  local kind = kind_of(q)
  if kind == 'rwlock' or kind == 'semaphore' then
    redis.call('ZREM', q, member)
    touch_rev()
    local hk = holders_key(q)
    local held = false
    if redis.call('TYPE', hk)['ok'] == 'zset' then
      held = redis.call('ZREM', hk, member) == 1
      if held and kind == 'semaphore' then
        local used = used_permits(hk) - permits_of(member)
        if used > 0 then redis.call('ZADD', hk, int(used), USED) else redis.call('ZREM', hk, USED) end
      end
    end
    -- Whoever may own now is admitted and rung.
    admit(q, kind)
    -- A waiting entry removed by someone else (a revoke, another handle) must stop waiting:
    -- ring it so it re-checks and finds itself gone.
    if not held then ring(lease_of(member), 'c ' .. member) end
    if redis.call('ZCARD', q) == 0 then queue_emptied(q, kind) end
    return true
  end
  if kind == 'dbarrier' then
    redis.call('ZREM', q, member)
    touch_rev()
    dbarrier_changed(q)
    return true
  end
  redis.call('ZREM', q, member)
  if is_election(q) then
    local vk = election_keys(q)
    if redis.call('TYPE', vk)['ok'] == 'hash' then redis.call('HDEL', vk, member) end
  end
  touch_rev()
  local head_score = handoff(q, score)
  -- A waiting entry removed by someone else (a revoke, another handle) must stop waiting:
  -- ring it so it re-checks and finds itself gone.
  if head_score and head_score < score then
    local lease = lease_of(member)
    if lease then ring(lease, 'c ' .. member) end
  end
  if is_election(q) then election_sync(q) end
  return true
end

-- Take key `key` ("k <key>") out of `lease`'s attachments, when they are a set (foreign data
-- stays): the key was deleted, or is now held or put with another lease.
local function detach_key(lease, key)
  local ak = attached_key(lease)
  if redis.call('TYPE', ak)['ok'] == 'set' then redis.call('SREM', ak, 'k ' .. key) end
end

-- Keys put with Client::put, Session::put or a transaction (lua/kv/kv_put.lua,
-- kv_delete.lua, kv_txn.lua): the hash of key `name`.
local function kv_key(name) return P .. KV .. name end

-- The key event log {ns}:kv-events, which watches read (lua/kv/kv_watch.lua): one entry per
-- put ('p') or delete ('d', also when a key goes with its lease), id "<revision>-<sequence>"
-- (several deletes of one sweep share a revision), fields t, k (name), v (value), l (lease),
-- prev (the previous entry's id: a reader whose `after` is not the next entry's prev missed
-- entries) and at (for trimming by bytes: log_append). At most
-- KV_LOG_CAP entries (roughly: MAXLEN ~) and KV_LOG_BYTES bytes of values
-- (KV_EVENT_LOG_ENTRIES and KV_EVENT_LOG_BYTES in src/base/limits.rs). It has no TTL: like
-- the revision counter it stays, bounded, so that the chain of prev ids tells a watch of every
-- entry it missed (a log that expired would start again at '0-0' and hide the gap).
local KV_LOG_CAP = 10000
local KV_LOG_BYTES = 8388608
local function kv_log(t, name, value, lease, rev)
  local lk = P .. 'kv-events'
  -- Foreign data at the log, or an entry no revision can follow: no event (a write, a revoke
  -- or a sweep must not fail on it).
  local lt = redis.call('TYPE', lk)['ok']
  if lt ~= 'stream' and lt ~= 'none' then return end
  local top, last = log_top(lk)
  if not top or top > rev then return end
  local seq, prev = 0, '0-0'
  if last then
    prev = last[1]
    if top == rev then seq = (tonumber(string.match(last[1], '%-(%d+)$')) or 0) + 1 end
  end
  local id = int(rev) .. '-' .. int(seq)
  log_append(lk, last, id, { 't', t, 'k', name, 'v', value, 'l', lease, 'prev', prev }, 'v',
    KV_LOG_CAP, KV_LOG_BYTES)
  publish(P .. 'kv-changes', id)
end

-- Put key `name` = `value` (with `lease`, '' for none), its hash and the index already
-- type-checked and the lease found alive. Returns the put's revision.
local function kv_put_apply(name, value, lease)
  local k = kv_key(name)
  local old = redis.call('HMGET', k, 'lease', 'crev', 'ver')
  local old_lease, crev, ver = old[1] or '', tonumber(old[2]), tonumber(old[3]) or 0
  -- A key whose lease is dead is gone, whether or not a sweep has deleted it yet: watches see
  -- its delete (the sweep will not log one, the key being put again), then this put.
  local expired = old_lease ~= '' and not lease_left(old_lease)
  if expired then crev, ver = nil, 0 end
  if old_lease ~= '' and old_lease ~= lease then detach_key(old_lease, k) end
  local rev = next_rev()
  if expired then kv_log('d', name, '', '', rev) end
  redis.call('HSET', k, 'v', value, 'lease', lease, 'crev', int(crev or rev), 'mrev', int(rev),
    'ver', int(ver + 1))
  redis.call('ZADD', KEYS_INDEX, '0', name)
  if lease ~= '' then attach(lease, attached_key(lease), 'k ' .. k) end
  kv_log('p', name, value, lease, rev)
  return rev
end

-- Delete key `name`, its hash and the index already type-checked. Returns whether a live key
-- was there.
local function kv_delete_apply(name)
  local k = kv_key(name)
  if redis.call('EXISTS', k) == 0 then
    redis.call('ZREM', KEYS_INDEX, name)
    return false
  end
  local lease = redis.call('HGET', k, 'lease') or ''
  local alive = lease == '' or lease_left(lease) ~= nil
  if lease ~= '' then detach_key(lease, k) end
  redis.call('DEL', k)
  redis.call('ZREM', KEYS_INDEX, name)
  touch_rev()
  kv_log('d', name, '', '', rev_bumped)
  return alive
end

-- Delete a key put with `lease` (a key, or a held barrier), unless it has since been put
-- with another lease.
local function drop_kv(key, lease)
  if redis.call('TYPE', key)['ok'] ~= 'hash' then return end
  if redis.call('HGET', key, 'lease') ~= lease then return end
  redis.call('DEL', key)
  touch_rev()
  local kind = kind_of(key)
  if kind == 'key' then
    local name = string.sub(key, #P + #KV + 1)
    if redis.call('TYPE', KEYS_INDEX)['ok'] == 'zset' then redis.call('ZREM', KEYS_INDEX, name) end
    kv_log('d', name, '', '', rev_bumped)
  elseif kind == 'barrier' then
    publish(P .. 'barrier-changes:' .. string.sub(key, #P + #'barrier:' + 1),
      int(rev_bumped or 0))
  end
end

-- The kinds of queue whose entries are attached to leases (queue items are not).
local LEASED_QUEUES = { mutex = true, rwlock = true, semaphore = true, election = true,
  dbarrier = true }

-- When the lease drop_lease is dropping died (ms), for the lock-delays of its mutexes.
local delay_died

local function detach_entry(entry, lease)
  local kind, member, key = entry_parts(entry)
  if kind == 'z' then
    -- Only this lease's own entries, in its own kinds of queue: a foreign entry naming a
    -- job queue must not make a revoke delete jobs.
    if lease_of(member) ~= lease or not LEASED_QUEUES[kind_of(key)] then return end
    if not owned(key) or redis.call('TYPE', key)['ok'] ~= 'zset' then return end
    -- Its owner's lease ends without an unlock: a mutex with a lock-delay stays held by a
    -- placeholder (delay_hold) when no live entry was ahead of it.
    local score = delay_died and kind_of(key) == 'mutex'
      and tonumber(redis.call('ZSCORE', key, member))
    if score and delay_if_owner(key, member, score, delay_died) then return end
    leave_queue(key, member)
  elseif kind == 'k' then
    if owned(key) then drop_kv(key, lease) end
  end
end

-- Attachments one script call releases at most (revoke, sweep, a renewal that finds a lease's
-- hash gone): releasing one costs a few microseconds, so a call stays in the low milliseconds
-- whatever a lease holds. A lease with more is finished by later calls: it is dead from the
-- first one (its hash is gone and its registry score is 0, so every script sees it expired),
-- the revoking client repeats its call, and any client's sweep resumes it.
local DROP_BUDGET = 64
local drop_budget

-- The start of every call of a script with this prelude, after begin: what is per call here.
local function begin_queues()
  KEYS_INDEX = P .. 'keys'
  drop_budget = DROP_BUDGET
  delay_died = nil
end

-- Delete a lease and everything attached to it, within this call's drop budget; tell its
-- owner why (`why` = 'r' revoked, 'x' expired), unless the owner is `caller`: a client
-- revoking a lease it has stopped using. Returns whether the lease is now gone entirely
-- (false: the budget ran out, later calls finish it).
-- A live lease its own client revokes (Session::close, a dropped Session) ends cleanly: its
-- mutexes get no lock-delay (a guard dropped just before may still have its release in
-- flight). Its registry score is then -1 instead of 0 until the last call, so later calls of a
-- revoke in chunks know it too.
local function drop_lease(id, why, caller)
  local lk, ak = lease_key(id), attached_key(id)
  ring(id, why .. ' ' .. id, caller)
  local expiry = tonumber(redis.call('ZSCORE', REG, id)) or 0
  -- Foreign data at the lease's keys stays where it is.
  local clean = expiry == -1
  if redis.call('TYPE', lk)['ok'] == 'hash' then
    clean = clean or (expiry > NOW_MS and caller ~= nil and caller ~= ''
      and redis.call('HGET', lk, 'client') == caller)
    redis.call('DEL', lk)
  end
  if redis.call('TYPE', ak)['ok'] == 'set' then
    -- When it died, for lock-delays: its expiry, or now for a lease revoked while alive (or
    -- one a revoke began, whose score is 0).
    delay_died = nil
    if not clean then
      delay_died = (expiry > 0 and expiry <= NOW_MS) and expiry or NOW_MS
    end
    -- Dead before the first release, so hand-overs skip its other entries.
    redis.call('ZADD', REG, clean and '-1' or '0', id)
    if drop_budget > 0 then
      local batch = redis.call('SPOP', ak, drop_budget)
      for _, e in ipairs(batch) do detach_entry(e, id) end
      drop_budget = drop_budget - #batch
    end
    if redis.call('EXISTS', ak) == 1 then return false end
  end
  redis.call('ZREM', REG, id)
  return true
end

-- Drop up to `limit` leases whose registry expiry has passed, within this call's drop
-- budget. Returns how many expired leases it found (a lease a revoke or an earlier sweep
-- began, score 0 or -1, is finished but not counted again) and whether more are left.
local function sweep(limit)
  if limit <= 0 then return 0, false end
  local ids = redis.call('ZRANGEBYSCORE', REG, '-inf', NOW_MS, 'WITHSCORES', 'LIMIT', 0, limit)
  local found = 0
  for i = 1, #ids, 2 do
    if drop_budget <= 0 then return found, true end
    if ids[i + 1] ~= '0' and ids[i + 1] ~= '-1' then found = found + 1 end
    if not drop_lease(ids[i], 'x') then return found, true end
  end
  return found, #ids >= 2 * limit
end

-- Spread namespaces (src/redis/spread.rs): one namespace over N sub-namespaces, each its own
-- hash tag. The home namespace's `meta` hash records N and the version of the name hash;
-- clients that map names differently would queue for one lock in two places, so a client
-- configured otherwise is refused (LHLAYOUT). N = 1 writes nothing: the unspread layout. A
-- spread layout is recorded only while no lease of the home namespace is alive, so that no
-- unspread client is at work when it starts to apply; from then on unspread grants are refused.
-- Returns the layout in force: N and the hash version, as strings.
local MAX_SPREAD = 1024
local function check_layout(mk, n_arg, hash)
  if mk ~= P .. 'meta' then fail('ARG', 'expected the layout key ' .. P .. 'meta') end
  local n = uint_of(n_arg)
  if not n or n < 1 or n > MAX_SPREAD then fail('ARG', 'spread must be 1 to ' .. MAX_SPREAD) end
  expect_type(mk, 'hash')
  local f = redis.call('HMGET', mk, 'spread', 'hash')
  if f[1] then
    if f[1] ~= int(n) or f[2] ~= hash then
      fail('LAYOUT', 'the namespace is spread over ' .. tostring(f[1]) ..
        ' sub-namespaces with name hash ' .. tostring(f[2]) .. ', this client over ' .. int(n) ..
        ' with name hash ' .. hash)
    end
    return f[1], f[2]
  end
  if n == 1 then return '1', hash end
  if #typed(REG, 'zset', 'ZRANGE', REG, '(' .. int(NOW_MS), '+inf', 'BYSCORE', 'LIMIT', 0, 1) > 0 then
    fail('LAYOUT', 'the namespace has live leases of clients that do not spread it;' ..
      ' it can be spread once they are gone')
  end
  redis.call('HSET', mk, 'spread', int(n), 'hash', hash)
  return int(n), hash
end

-- Tombstones of a sub-namespace (`revoked`: lease id -> expiry in ms): a lease revoked from
-- outside its client (Client::revoke) cannot be granted here again until its tombstone runs
-- out, which closes the race with that client's first lock call here still in flight. Expired
-- tombstones are trimmed a few per call, so a call stays short whatever their number.
local TOMBSTONE_TRIM = 16
local function expect_tombstones(rk)
  if rk ~= P .. 'revoked' then fail('ARG', 'expected the tombstone key ' .. P .. 'revoked') end
  expect_type(rk, 'zset')
end
local function trim_tombstones(rk)
  local old = redis.call('ZRANGE', rk, '-inf', '(' .. int(NOW_MS), 'BYSCORE', 'LIMIT', 0,
    TOMBSTONE_TRIM)
  if #old > 0 then redis.call('ZREM', rk, unpack(old)) end
end
