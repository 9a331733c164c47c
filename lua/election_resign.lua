-- Withdraw a candidacy; if it led, the next live candidate leads and its doorbell rings
-- (Election::resign, a dropped campaign; see src/election.rs).
-- KEYS: rev, leases, election:<name>, election-values:<name>, election-log:<name>,
--       attached:<lease>
-- ARGV: lease id, candidate, revision (0 = whatever revision it has)
-- Returns 1 when the candidacy led, 0 otherwise (absent, only waiting, or lease dead).
expect_base()
local Q, VK, LK, AK = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local lease, member, want = ARGV[1], ARGV[2], tonumber(ARGV[3])
if lease_of(member) ~= lease or AK ~= attached_key(lease) then fail('ARG', 'candidate does not match lease ' .. lease) end
expect_election_keys()
if not want then fail('ARG', 'revision must be a number') end
expect_type(AK, 'set')
local score = tonumber(redis.call('ZSCORE', Q, member))
if not score then
  -- A withdrawal that overtook its own campaign: make sure the campaign cannot queue later.
  if want == 0 and lease_left(lease) then tombstone(AK, member) end
  return 0
end
if want ~= 0 and score ~= want then return 0 end
local head = live_head(Q, false, 64)
leave_queue(Q, member)
redis.call('SREM', AK, 'z ' .. member .. ' ' .. Q)
if head == member then return 1 end
return 0
