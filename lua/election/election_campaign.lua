-- Stand as a candidate and report whether this candidacy leads (Election::campaign; see
-- src/sync/election.rs). One candidacy per lease and election, as in etcd: campaigning again with
-- the same lease (another Election handle, or a restart that reuses the lease) resumes it and
-- updates its value. Waiters call it again with `recheck` to see whether their turn has come.
-- KEYS: rev, leases, election:<name>, election-values:<name>, election-log:<name>,
--       attached:<lease>
-- ARGV: lease id, candidate ("<lease id>.c"), value, recheck (1 = do not (re)create)
-- Returns {'leader', revision} | {'wait', revision, head, head_left_ms} | {'lost'} (our lease
-- is dead) | {'gone'} (recheck found the candidacy withdrawn).
expect_base()
local Q, VK, LK, AK = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local lease, member, value, recheck = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
expect_member(lease, member, AK, 'candidate')
expect_election_keys()
expect_type(AK, 'set')
if not lease_left(lease) then return { 'lost' } end
local rev = tonumber(redis.call('ZSCORE', Q, member))
if not rev then
  if recheck or tombstoned(AK, member) then return { 'gone' } end
  rev = next_rev()
  redis.call('ZADD', Q, int(rev), member)
  attach(lease, AK, 'z ' .. member .. ' ' .. Q)
end
if not recheck then redis.call('HSET', VK, member, value) end
election_sync(Q)
local head, left = live_head(Q, true, 64)
if head == member then return { 'leader', rev } end
return { 'wait', rev, head or '', left or 0 }
