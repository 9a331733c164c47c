-- Enter a double barrier: wait until `count` participants are in (DoubleBarrier::enter; see
-- src/recipes/double_barrier.rs). Participants are attached to their leases; dead ones are pruned.
-- KEYS: rev, leases, dbarrier:<name>, dbarrier-ready:<name>, attached:<lease>
-- ARGV: lease id, participant ("<lease id>.<id>"), count, recheck (1 = do not (re)enter)
-- Returns {'ready'} | {'wait', participants, ms until one of their leases expires} |
-- {'full', participants} | {'gone'} | {'lost'}.
expect_base()
local Q, READY, AK = KEYS[3], KEYS[4], KEYS[5]
local lease, member, count, recheck = ARGV[1], ARGV[2], uint_of(ARGV[3]), ARGV[4] == '1'
expect_member(lease, member, AK, 'participant')
if kind_of(Q) ~= 'dbarrier' or READY ~= dbarrier_keys(Q) then fail('ARG', 'not a double barrier key: ' .. Q) end
if not count or count < 1 then fail('ARG', 'count must be at least 1') end
expect_type(Q, 'zset')
expect_type(READY, 'string')
expect_type(AK, 'set')
if not lease_left(lease) then return { 'lost' } end
local live, left = participants(Q)
-- A round flag with nobody in the round is stale (foreign data, or written by hand).
if live == 0 and redis.call('EXISTS', READY) == 1 then redis.call('DEL', READY) end
if not redis.call('ZSCORE', Q, member) then
  if recheck or tombstoned(AK, member) then return { 'gone' } end
  if redis.call('EXISTS', READY) == 1 or live >= count then return { 'full', live } end
  redis.call('ZADD', Q, int(next_rev()), member)
  attach(lease, AK, 'z ' .. member .. ' ' .. Q)
  live, left = participants(Q)
  if live >= count then
    redis.call('SET', READY, '1')
    dbarrier_changed(Q)
  end
end
if redis.call('EXISTS', READY) == 1 then return { 'ready' } end
return { 'wait', live, left }
