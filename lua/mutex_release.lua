-- Remove one contender's own entry from a mutex queue and hand over to the next live waiter
-- (MutexGuard::unlock, dropping a guard or a pending wait; see src/waiter.rs). Only the entry
-- with this contender id *and* this revision is touched, so a retried or late release can never
-- remove a newer holder. The other lock kinds release through lua/lock_release.lua; this one is
-- the lock hot path: core prelude only, each key touched once before the first write.
-- KEYS: rev, leases, mutex:<name>, attached:<lease>
-- ARGV: lease id, contender, revision (0 = whatever revision this contender has)
-- Returns 1 when the entry was the live owner, 0 when it was not held (absent, only waiting,
-- or its lease already gone).
local Q, AK = KEYS[3], KEYS[4]
local lease, member, want = ARGV[1], ARGV[2], uint_of(ARGV[3])
if lease_of(member) ~= lease or AK ~= attached_key(lease) then fail('ARG', 'contender does not match lease ' .. lease) end
if not want then fail('ARG', 'revision must be a number') end
read_rev()
local alive = lease_left(lease)
local score = tonumber(typed(Q, 'zset', 'ZSCORE', Q, member))
if not score then
  -- A withdrawal that overtook its own request: make sure the request cannot queue later.
  if want == 0 and alive then tombstone(AK, member) end
  return 0
end
if want ~= 0 and score ~= want then return 0 end
typed(AK, 'set', 'SREM', AK, 'z ' .. member .. ' ' .. Q)
-- Whether it owned: the first live entry (dead ones ahead are pruned on the way).
local head, _, head_score, more = live_head(Q, true, 64)
redis.call('ZREM', Q, member)
touch_rev()
if head == member or more then
  handoff(Q, score)
elseif head and head_score > score then
  -- Our own lease had lapsed, so the walk pruned us: the head behind us owns now; tell it.
  ring(lease_of(head), 'c ' .. head)
end
if head == member then return 1 end
return 0
