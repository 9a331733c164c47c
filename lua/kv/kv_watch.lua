-- Read the key event log for a watch (Client::watch; see src/kv/watch.rs). Read-only.
-- KEYS: rev, leases, kv-events
-- ARGV: from ('after:<id>' for entries after that one, 'rev:<n>' for entries at revision n or
-- later, 'now' for none: only where the log ends), the key or prefix, exact ('1': the key
-- itself only), count (entries looked at, at most WATCH_LOOK)
-- Returns {gap, position, revision, then per matching entry: id, t, k, v, l} where gap = 1
-- when entries the watch should have seen were trimmed from the log (it resumes at the oldest
-- kept one), position is the id to read after next time (the last entry looked at, matching
-- or not; '' when none was: read from the same place again), and revision the namespace's
-- current one. Values past WATCH_BYTES in one reply end
-- it early (the first entry always goes).
local WATCH_LOOK = 1024
local WATCH_BYTES = 4194304
expect_base()
local LK = KEYS[3]
if LK ~= P .. 'kv-events' then fail('ARG', 'keys do not match the key event log') end
expect_type(LK, 'stream')
local from, key, exact, count = ARGV[1], ARGV[2], ARGV[3] == '1', uint_of(ARGV[4])
if not count or count < 1 or count > WATCH_LOOK then fail('ARG', 'bad count') end
local top, last = log_top(LK)
if not top then fail('CORRUPT', 'log entry id beyond any revision: ' .. LK) end
local out = { 0, '', rev_now }
if from == 'now' then
  out[2] = last and last[1] or '0-0'
  return out
end
local entries
local after = string.match(from, '^after:(%d+%-%d+)$')
local at_rev = uint_of(string.match(from, '^rev:(%d+)$') or '')
if after then
  -- From `after` itself (a sequence number may be too large for a Lua number), dropping it.
  entries = redis.call('XRANGE', LK, after, '+', 'COUNT', count + 1)
  if #entries > 0 and entries[1][1] == after then table.remove(entries, 1) end
  if #entries > count then entries[#entries] = nil end
  if #entries > 0 and entry_fields(entries[1]).prev ~= after then out[1] = 1 end
elseif at_rev then
  entries = redis.call('XRANGE', LK, int(at_rev) .. '-0', '+', 'COUNT', count)
  -- Entries at `at_rev` or later were trimmed when the oldest one kept follows one that was.
  if #entries > 0 then
    local prev = entry_fields(entries[1]).prev or '0-0'
    local prev_rev = uint_of(string.match(prev, '^(%d+)%-') or '') or 0
    if prev ~= '0-0' and prev_rev >= at_rev then out[1] = 1 end
  end
else
  fail('ARG', 'bad position ' .. from)
end
local bytes = 0
for _, e in ipairs(entries) do
  local f = entry_fields(e)
  local k = f.k or ''
  local match
  if exact then match = k == key else match = string.sub(k, 1, #key) == key end
  if match and (f.t == 'p' or f.t == 'd') and uint_of(string.match(e[1], '^(%d+)%-') or '') then
    bytes = bytes + #(f.v or '')
    if bytes > WATCH_BYTES and #out > 3 then break end
    out[#out + 1] = e[1]
    out[#out + 1] = f.t
    out[#out + 1] = k
    out[#out + 1] = f.v or ''
    out[#out + 1] = f.l or ''
  end
  out[2] = e[1]
end
return out
