-- Leave a double barrier: wait until every participant has left or died
-- (DoubleBarrier::leave; see src/recipes/double_barrier.rs).
-- KEYS: rev, leases, dbarrier:<name>, dbarrier-ready:<name>, attached:<lease>
-- ARGV: lease id, participant, first (1 = remove ourselves now; 0 = only re-check)
-- Returns {'done'} | {'wait', participants left, ms until one of their leases expires}.
expect_base()
local Q, READY, AK = KEYS[3], KEYS[4], KEYS[5]
local lease, member = ARGV[1], ARGV[2]
expect_member(lease, member, AK, 'participant')
if kind_of(Q) ~= 'dbarrier' or READY ~= dbarrier_keys(Q) then fail('ARG', 'not a double barrier key: ' .. Q) end
expect_type(Q, 'zset')
expect_type(READY, 'string')
expect_type(AK, 'set')
if ARGV[3] == '1' then
  leave_queue(Q, member)
  redis.call('SREM', AK, 'z ' .. member .. ' ' .. Q)
end
local live, left = participants(Q)
if live == 0 then
  if redis.call('EXISTS', READY) == 1 then
    redis.call('DEL', READY)
    touch_rev()
    dbarrier_changed(Q)
  end
  return { 'done' }
end
return { 'wait', live, left }
