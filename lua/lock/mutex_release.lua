-- Remove one contender's own entry from a mutex queue and hand over to the next live waiter
-- (MutexGuard::unlock, dropping a guard or a pending wait; see src/wait/entry.rs). Only the entry
-- with this contender id *and* this revision is touched, so a retried or late release can never
-- remove a newer holder. The other lock kinds release through lua/lock/lock_release.lua; this one is
-- the lock hot path: core prelude only, each key touched once before the first write, and an
-- uncontended release reads the queue once.
-- A release does not move the revision counter: fencing tokens come from acquisitions, each
-- of which takes a new revision, and nothing orders releases. So a release alone in its
-- queue never reads the counter; one with others queued reads it before its first write, as
-- pruning a dead entry on the way moves it.
-- KEYS: rev, leases, mutex:<name>, attached:<lease>
-- ARGV: lease id, contender, revision (0 = whatever revision this contender has)
-- Returns 1 when the entry was the live owner, 0 when it was not held (absent, only waiting,
-- or its lease already gone).
local Q, AK = KEYS[3], KEYS[4]
local lease, member, want = ARGV[1], ARGV[2], uint_of(ARGV[3])
-- (expect_member's check, written out: this is the hot path)
if lease_of(member) ~= lease or AK ~= attached_key(lease) then fail('ARG', 'contender does not match lease ' .. lease) end
if not want then fail('ARG', 'revision must be a number') end
local alive = own_lease_left(lease)
-- The front of the queue: a holder finds itself here.
local front = typed(Q, 'zset', 'ZRANGE', Q, '0', '15', 'WITHSCORES')
local score
for i = 1, #front, 2 do
  if front[i] == member then score = tonumber(front[i + 1]) break end
end
if not score and #front == 32 then score = tonumber(redis.call('ZSCORE', Q, member)) end
if #front > 2 then read_rev() end
if not may_release(score, AK, lease, member, want) then return 0 end
typed(AK, 'set', 'SREM', AK, 'z ' .. member .. ' ' .. Q)
-- An owner whose lease ran out before its unlock: a lock-delay holds the lock on (delay_hold).
if not alive and delay_if_owner(Q, member, score, died_at(member)) then return 0 end
redis.call('ZREM', Q, member)
local owned = alive ~= nil
-- Alone in the queue: nobody to hand over to.
if #front == 2 then return owned and 1 or 0 end
-- The first live entry left (dead ones ahead are pruned on the way).
-- Waiters behind an owner released alive never owned: no lock-delay of theirs applies.
local head, _, head_score = live_head(Q, true, 64, owned and score or nil)
if head and head_score < score then
  -- A live entry ahead of it owns, and still does: it was only waiting.
  return 0
end
-- No live entry was ahead of it: it owned (if its lease is alive), and a live head behind it
-- owns now. (Past the walk's limit of dead entries head is nil, and waiters re-check at once.)
if head then ring_turn(Q, head, head_score) end
if owned then return 1 end
return 0
