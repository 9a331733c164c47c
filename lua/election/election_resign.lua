-- Withdraw a candidacy; if it led, the next live candidate leads and its doorbell rings
-- (Election::resign, a dropped campaign; see src/sync/election.rs).
-- KEYS: rev, leases, election:<name>, election-values:<name>, election-log:<name>,
--       attached:<lease>
-- ARGV: lease id, candidate, revision (0 = whatever revision it has)
-- Returns 1 when the candidacy led, 0 otherwise (absent, only waiting, or lease dead).
expect_base()
local Q, VK, LK, AK = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local lease, member, want = ARGV[1], ARGV[2], uint_of(ARGV[3])
expect_member(lease, member, AK, 'candidate')
expect_election_keys()
if not want then fail('ARG', 'revision must be a number') end
expect_type(AK, 'set')
local score = tonumber(redis.call('ZSCORE', Q, member))
if not may_release(score, AK, lease, member, want) then return 0 end
local head = live_head(Q, false, 64)
leave_queue(Q, member)
redis.call('SREM', AK, 'z ' .. member .. ' ' .. Q)
if head == member then return 1 end
return 0
