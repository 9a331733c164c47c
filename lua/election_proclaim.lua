-- Change the leader's value, only while this candidacy leads at its own revision
-- (Election::proclaim; see src/election.rs).
-- KEYS: rev, leases, election:<name>, election-values:<name>, election-log:<name>
-- ARGV: candidate, revision, value
-- Returns 1 when proclaimed, 0 when this candidacy does not lead.
expect_base()
local Q, VK, LK = KEYS[3], KEYS[4], KEYS[5]
local vk, lk = election_keys(Q)
if not is_election(Q) or VK ~= vk or LK ~= lk then fail('ARG', 'keys do not match election ' .. Q) end
expect_type(Q, 'zset')
expect_type(VK, 'hash')
expect_type(LK, 'stream')
local head, _, score = live_head(Q, true, 64)
if head ~= ARGV[1] or score ~= tonumber(ARGV[2]) then
  election_sync(Q)
  return 0
end
redis.call('HSET', VK, head, ARGV[3])
election_sync(Q)
return 1
