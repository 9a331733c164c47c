-- Read the election's log for observers and Election::leader (see src/sync/election.rs). First it
-- records a leader change nobody has logged yet (a leader whose lease expired), so observers
-- that wake at the leader's lease deadline see the change at once.
-- KEYS: rev, leases, election:<name>, election-values:<name>, election-log:<name>
-- ARGV: after (a log id, or '' for the latest entry only), count
-- Returns {leader_left_ms, gap, id, member, value, token, id, member, value, token, ...}
-- where gap = 1 when entries after `after` were trimmed from the log. Entries leasehold did
-- not write (foreign data: no candidate, a token that is not a revision) are left out. Values
-- past OBSERVE_BYTES in one reply end it early (the first entry always goes): the caller
-- asks again after the last id it got.
expect_base()
local Q, VK, LK = KEYS[3], KEYS[4], KEYS[5]
expect_election_keys()
election_sync(Q)
local _, left = live_head(Q, false, 64)
local out = { left or 0, 0 }
local after, count = ARGV[1], uint_of(ARGV[2]) or 64
local entries
if after == '' then
  entries = redis.call('XREVRANGE', LK, '+', '-', 'COUNT', 1)
else
  if not string.match(after, '^%d+%-%d+$') then fail('ARG', 'bad log id ' .. after) end
  -- From `after` itself (not after + 1: a sequence number may be too large for a Lua number),
  -- dropping it if it is still there.
  entries = redis.call('XRANGE', LK, after, '+', 'COUNT', count + 1)
  if #entries > 0 and entries[1][1] == after then table.remove(entries, 1) end
  if #entries > count then entries[#entries] = nil end
  if #entries > 0 and entry_fields(entries[1]).prev ~= after then out[2] = 1 end
end
local OBSERVE_BYTES = 4194304
local bytes = 0
for _, e in ipairs(entries) do
  local f = entry_fields(e)
  bytes = bytes + #(f.value or '')
  if bytes > OBSERVE_BYTES and #out > 2 then break end
  local member, token = f.member or '', f.token or '0'
  if uint_of(string.match(e[1], '^(%d+)%-')) and uint_of(token)
    and (member == '' or lease_of(member) and is_lease_id(lease_of(member))) then
    out[#out + 1] = e[1]
    out[#out + 1] = member
    out[#out + 1] = f.value or ''
    out[#out + 1] = token
  end
end
return out
