-- Change the leader's value, only while this candidacy leads at its own revision
-- (Election::proclaim; see src/sync/election.rs).
-- KEYS: rev, leases, election:<name>, election-values:<name>, election-log:<name>
-- ARGV: candidate, revision, value
-- Returns 1 when proclaimed, 0 when this candidacy does not lead.
expect_base()
local Q, VK, LK = KEYS[3], KEYS[4], KEYS[5]
expect_election_keys()
local head, _, score = live_head(Q, true, 64)
if head ~= ARGV[1] or score ~= uint_of(ARGV[2]) then
  election_sync(Q)
  return 0
end
redis.call('HSET', VK, head, ARGV[3])
election_sync(Q)
return 1
