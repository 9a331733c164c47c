-- Renew a batch of leases and sweep expired ones (the keepalive supervisor's one call per tick;
-- also Client::keep_alive_once; see src/lease/leases.rs).
-- KEYS: rev, leases, then lease:<id>, attached:<id> for each id in ARGV order
-- ARGV: sweep limit, renewing client id ('' to renew whoever uses the lease), then per lease:
--   id, count (1: also count its attachments, which its session compares with what it holds;
--   'd<epoch>': a sub-lease of a spread namespace its client no longer uses (lease_touch.lua):
--   drop it instead if nothing is attached and it is still that grant, else renew it)
-- Returns {server seconds, server microseconds, swept, replication id, then per id: ttl_ms,
-- -1 when the lease is gone, -2 when another client took it over (lease_adopt.lua), or -3
-- when it was dropped as asked (now, or by an earlier call whose reply was lost: a drop leaves
-- a marker, the lease hash with only `dropped` = the epoch, for one TTL), then per id: its
-- attachments that are intact (-1 when not counted; see intact_entries), then the server's
-- maxmemory-policy ('' when INFO is not permitted), then 1 when expired leases are left to
-- sweep (0 when not)}.
-- Per lease it runs HMGET and PEXPIRE, and for a counted one SRANDMEMBER, SCARD only when the
-- sample is full, and a lookup per sampled entry; the registry is read and written for all
-- leases at once (ZMSCORE, ZADD XX). RenewAs::cost (src/lease/leases.rs) prices this.
-- The sweep works within the drop budget (lua/prelude/queues.lua): a backlog, or a lease with
-- many attachments, is finished by further calls.
-- A lease whose hash leasehold cannot read (foreign data: another type, a TTL that is not one)
-- is reported gone rather than renewed forever, and never fails the batch: one session's
-- corrupted lease must not stop the others' renewals.
-- The replication id tells the client when it is talking to another history (a promoted
-- replica, a server restarted empty): its leases may be gone and its sessions are re-checked.
-- Up to ENTRY_CHECKS of a counted lease's attachments (all of them when it has no more, a
-- random sample otherwise) are checked against what they point at: an entry whose queue
-- member or key vanished (evicted, FLUSHALL, a foreign DEL) is counted out, so the session
-- learns its lock may have passed to someone else. Attachments and what they point at only
-- change together in leasehold's scripts, so nothing else makes an entry missing.
local ENTRY_CHECKS = 4
-- A renewed lease's attachments that are intact, or -1 when they cannot be read (an ACL
-- user without the commands, foreign data at the key). The sample alone is the count when it
-- is smaller than ENTRY_CHECKS (SRANDMEMBER with a positive count returns distinct members).
local function intact_entries(id, ak)
  local sample = redis.pcall('SRANDMEMBER', ak, ENTRY_CHECKS)
  if type(sample) ~= 'table' or sample.err then
    local all = redis.pcall('SCARD', ak)
    return type(all) == 'number' and all or -1
  end
  local all = #sample
  if all >= ENTRY_CHECKS then
    all = redis.pcall('SCARD', ak)
    if type(all) ~= 'number' then return -1 end
  end
  for _, e in ipairs(sample) do
    local kind, member, key = entry_parts(e)
    if kind and kind ~= 'w' and owned(key) then
      if kind == 'z' then
        local score = redis.pcall('ZSCORE', key, member)
        if not score or type(score) == 'table' then all = all - 1 end
      elseif redis.pcall('HGET', key, 'lease') ~= id then
        all = all - 1
      end
    end
  end
  return all
end

-- Every lease's registry score in one command per CHUNK ids (within Lua's stack for unpack):
-- a table index -> ms left (false when not alive), or nil when ZMSCORE is not permitted (an
-- ACL line from before it was granted: each lease is then looked up alone).
local CHUNK = 1000
local function registry_scores(n)
  local left = {}
  for first = 1, n, CHUNK do
    local last = math.min(n, first + CHUNK - 1)
    local ids = {}
    for i = first, last do ids[#ids + 1] = ARGV[1 + 2 * i] end
    local s = redis.pcall('ZMSCORE', REG, unpack(ids))
    if type(s) ~= 'table' or s.err then return nil end
    for k = 1, #ids do left[first + k - 1] = left_of_score(s[k]) or false end
  end
  return left
end

expect_base()
local n = (#ARGV - 2) / 2
if n ~= math.floor(n) then fail('ARG', 'expected an entry count per lease id') end
local client = ARGV[2]
if #KEYS ~= 2 + 2 * n then fail('ARG', 'expected 2 keys per lease id') end
for i = 1, n do
  local id = ARGV[1 + 2 * i]
  if KEYS[1 + 2 * i] ~= lease_key(id) or KEYS[2 + 2 * i] ~= attached_key(id) then
    fail('ARG', 'keys do not match lease ' .. id)
  end
end
-- pcall: a Redis user without +info still renews, without this early failover signal.
local info = redis.pcall('INFO', 'replication')
local replid = type(info) == 'string' and string.match(info, 'master_replid:(%w+)') or ''
local out = { T[1], T[2], 0, replid }
local scores = registry_scores(n)
-- Renewed leases' new registry scores, written together after the loop (ZADD XX: a lease
-- dropped meanwhile stays dropped). Nothing in the loop reads a score other than as alive or
-- not, and a lease stays alive until then either way.
local renewed = {}
local seen = {}
for i = 1, n do
  local id, lk, ak = ARGV[1 + 2 * i], KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local flag = ARGV[2 + 2 * i]
  local count = flag == '1'
  local drop = string.sub(flag, 1, 1) == 'd' and string.sub(flag, 2)
  -- An id given twice is looked up again: its first turn may have dropped it.
  local left
  if not is_lease_id(id) then
    left = nil
  elseif scores and not seen[id] then
    left = scores[i] or nil
  else
    left = registry_left(id)
  end
  seen[id] = true
  local ttl = -1
  if drop and not left and redis.pcall('HGET', lk, 'dropped') == drop then
    ttl = -3
  elseif left then
    -- pcall: a lease key holding another type (foreign data) reads as no TTL: reported gone.
    local f = redis.pcall('HMGET', lk, 'ttl', 'client')
    local t = type(f) == 'table' and not f.err and ttl_of(f[1])
    if t and client ~= '' and f[2] ~= client then
      ttl = -2
    elseif t and drop and redis.call('HGET', lk, 'epoch') == drop
        and redis.pcall('SCARD', ak) == 0 then
      redis.call('DEL', lk)
      redis.call('ZREM', REG, id)
      redis.call('HSET', lk, 'dropped', drop)
      redis.call('PEXPIRE', lk, int(t))
      ttl = -3
    elseif t then
      ttl = t
      redis.call('PEXPIRE', lk, int(ttl))
      renewed[#renewed + 1] = int(NOW_MS + ttl)
      renewed[#renewed + 1] = id
    elseif type(f) == 'table' and not f.err and redis.call('EXISTS', lk) == 0 then
      -- The hash vanished (evicted, deleted) while the registry still counts the lease: drop
      -- the rest now, so nobody waits behind its entries until the registry entry runs out.
      drop_lease(id, 'x', client)
    end
  end
  out[4 + i] = ttl
  -- pcall: an ACL user without SCARD, or foreign data at the key, leaves it uncounted.
  local attached = -1
  if count and ttl > 0 then
    attached = intact_entries(id, ak)
  elseif count then
    attached = redis.pcall('SCARD', ak)
  end
  out[4 + n + i] = type(attached) == 'number' and attached or -1
end
for first = 1, #renewed, 2 * CHUNK do
  redis.call('ZADD', REG, 'XX', unpack(renewed, first, math.min(#renewed, first + 2 * CHUNK - 1)))
end
-- The renewals above stand even if the sweep fails on data nobody foresaw.
local swept_ok, swept, more = pcall(sweep, uint_of(ARGV[1]) or 0)
out[3] = swept_ok and swept or 0
-- A policy that can evict lock keys may have been set since the client connected.
local mem = redis.pcall('INFO', 'memory')
out[#out + 1] = type(mem) == 'string' and string.match(mem, 'maxmemory_policy:([%w-]+)') or ''
out[#out + 1] = (swept_ok and more) and 1 or 0
return out
