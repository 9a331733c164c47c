-- Join a mutex queue and report whether this contender owns the lock (Mutex::lock and
-- Mutex::try_lock; see src/sync/mutex.rs). Calling it again for the same contender is how a waiter
-- re-checks: it keeps its place and its revision.
-- The lock hot path: runs with the core prelude only, and touches each key once before the
-- first write (a wrong type fails there, leaving everything as it was). The revision counter is
-- read and written by one command when the request queues (next_rev), and not at all by a
-- try_lock that finds the lock held or by a re-check.
-- KEYS: rev, leases, mutex:<name>, attached:<lease>
-- ARGV: lease id, contender ("<lease id>.<suffix>"), try (1 = do not queue behind a holder), recheck (1 = a waiter asking again)
-- Returns one of
--   {'held', revision}                      the lock is ours; revision is the fencing token
--   {'wait', revision, head, head_left_ms}  queued behind `head`, whose lease has head_left_ms
--   {'locked', head, head_left_ms}          try: someone else holds it, nothing was queued
--   {'gone'}                                re-check: the entry was removed (revoked, adopted),
--                                           or a withdrawal overtook this request
--   {'lost'}                                our lease is not alive
local Q, AK = KEYS[3], KEYS[4]
local lease, member, try, recheck = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4] == '1'
-- (expect_member's check, written out: this is the hot path)
if lease_of(member) ~= lease or AK ~= attached_key(lease) then fail('ARG', 'contender does not match lease ' .. lease) end
if not own_lease_left(lease) then return { 'lost' } end
if recheck then
  -- Re-checking a wait whose entry was removed (revoked, adopted): stop, do not re-queue.
  local rev = tonumber(typed(Q, 'zset', 'ZSCORE', Q, member))
  if not rev then return { 'gone' } end
  local head, left = live_head(Q, true, 64)
  if head == member then return { 'held', rev } end
  -- With dead entries still ahead (the walk stopped at its limit) head is nil: the caller
  -- re-checks at once.
  return { 'wait', rev, head or '', left or 0 }
end
-- A first call: the contender id is new, so it is not queued yet, unless a withdrawal that
-- overtook this request left a tombstone.
if tombstoned(AK, member) then return { 'gone' } end
local head, left, score, more = live_head(Q, true, 64)
if try and (head or more) then return { 'locked', head or '', left or 0 } end
local rev = next_rev()
redis.call('ZADD', Q, int(rev), member)
attach(lease, AK, 'z ' .. member .. ' ' .. Q)
if head and score < rev then return { 'wait', rev, head, left } end
if not head and not more then return { 'held', rev } end
-- Foreign entries scored beyond any revision, or a queue with many dead entries: walk again.
head, left = live_head(Q, true, 64)
if head == member then return { 'held', rev } end
return { 'wait', rev, head or '', left or 0 }
