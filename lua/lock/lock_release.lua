-- Remove one contender's own entry from a lock queue (mutex, rwlock or semaphore) and hand
-- over to whoever owns now (MutexGuard::unlock and the other guards, dropping a guard or a
-- pending wait; see src/wait/entry.rs). Only the entry with this contender id *and* this revision
-- is touched, so a retried or late release can never remove a newer holder.
-- KEYS: rev, leases, <kind>:<name>, attached:<lease>
-- ARGV: lease id, contender, revision (0 = whatever revision this contender has)
-- Returns 1 when the entry was a live owner, 0 when it was not held (absent, only waiting,
-- or its lease already gone).
expect_base()
local Q, AK = KEYS[3], KEYS[4]
local lease, member, want = ARGV[1], ARGV[2], uint_of(ARGV[3])
expect_member(lease, member, AK, 'contender')
if not want then fail('ARG', 'revision must be a number') end
expect_type(Q, 'zset')
expect_type(AK, 'set')
local score = tonumber(redis.call('ZSCORE', Q, member))
if not may_release(score, AK, lease, member, want) then return 0 end
local owned_it = owns_now(Q, member)
if not leave_queue(Q, member) and redis.call('ZCARD', Q) == 0 then
  queue_emptied(Q, kind_of(Q))
end
redis.call('SREM', AK, 'z ' .. member .. ' ' .. Q)
if owned_it then return 1 end
return 0
