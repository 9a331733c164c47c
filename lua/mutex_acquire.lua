-- Join a mutex queue and report whether this contender owns the lock (Mutex::lock and
-- Mutex::try_lock; see src/mutex.rs). Calling it again for the same contender is how a waiter
-- re-checks: it keeps its place and its revision.
-- KEYS: rev, leases, mutex:<name>, attached:<lease>
-- ARGV: lease id, contender ("<lease id>.<suffix>"), try (1 = do not queue behind a holder), recheck (1 = a waiter asking again)
-- Returns one of
--   {'held', revision}                      the lock is ours; revision is the fencing token
--   {'wait', revision, head, head_left_ms}  queued behind `head`, whose lease has head_left_ms
--   {'locked', head, head_left_ms}          try: someone else holds it, nothing was queued
--   {'lost'}                                our lease is not alive
expect_base()
local Q, AK = KEYS[3], KEYS[4]
local lease, member, try, recheck = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4] == '1'
if lease_of(member) ~= lease or AK ~= attached_key(lease) then fail('ARG', 'contender does not match lease ' .. lease) end
expect_type(Q, 'zset')
expect_type(AK, 'set')
if not lease_left(lease) then return { 'lost' } end
local rev = tonumber(redis.call('ZSCORE', Q, member))
if not rev then
  -- Re-checking a wait whose entry was removed (revoked, adopted): stop, do not re-queue.
  if recheck or tombstoned(AK, member) then return { 'gone' } end
  if try then
    local head, left, _, more = live_head(Q, true, 64)
    if head or more then return { 'locked', head or '', left or 0 } end
  end
  rev = next_rev()
  redis.call('ZADD', Q, int(rev), member)
  attach(lease, AK, 'z ' .. member .. ' ' .. Q)
end
local head, left, _, more = live_head(Q, true, 64)
if head == member then return { 'held', rev } end
-- With `more`, dead entries remain ahead of us: the caller re-checks at once.
return { 'wait', rev, head or '', left or 0 }
