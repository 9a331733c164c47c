-- Remove one contender's own entry from a mutex queue and hand the lock to the next live waiter
-- (MutexGuard::unlock, dropping a guard or a pending lock future; see src/mutex.rs).
-- Only the entry with this contender id *and* this revision is touched, so a retried or late
-- release can never remove a newer holder.
-- KEYS: rev, leases, mutex:<name>, attached:<lease>
-- ARGV: lease id, contender, revision (0 = whatever revision this contender has)
-- Returns 1 when the entry was the live owner, 0 when it was not held (absent, only waiting,
-- or its lease already gone).
expect_base()
local Q, AK = KEYS[3], KEYS[4]
local lease, member, want = ARGV[1], ARGV[2], tonumber(ARGV[3])
if lease_of(member) ~= lease or AK ~= attached_key(lease) then fail('ARG', 'contender does not match lease ' .. lease) end
if not want then fail('ARG', 'revision must be a number') end
expect_type(Q, 'zset')
expect_type(AK, 'set')
local score = tonumber(redis.call('ZSCORE', Q, member))
if not score or (want ~= 0 and score ~= want) then return 0 end
local head = live_head(Q, false, 64)
leave_queue(Q, member)
redis.call('SREM', AK, 'z ' .. member .. ' ' .. Q)
if head == member then return 1 end
return 0
