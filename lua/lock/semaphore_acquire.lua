-- Join a semaphore's queue asking for some permits, and report whether they are granted
-- (Semaphore::acquire and try_acquire; see src/sync/semaphore.rs). FIFO: a request that does not
-- fit blocks every later one. The size is fixed by the first contender of a non-empty queue.
-- KEYS: rev, leases, semaphore:<name>, semaphore-size:<name>, attached:<lease>
-- ARGV: lease id, contender ("<lease id>.<permits>.<id>"), size, try (1 = do not queue), recheck (1 = a waiter asking again)
-- Returns {'held', revision} | {'wait', revision, ms until an owner's lease expires} |
-- {'locked', ms} | {'size', existing size} | {'lost'}.
-- The cost does not depend on how many hold or wait (see admit in lua/prelude/queues.lua).
expect_base()
local Q, SK, AK = KEYS[3], KEYS[4], KEYS[5]
local lease, member, size, try, recheck = ARGV[1], ARGV[2], uint_of(ARGV[3]), ARGV[4] == '1', ARGV[5] == '1'
expect_member(lease, member, AK, 'contender')
if kind_of(Q) ~= 'semaphore' or SK ~= semaphore_size_key(Q) then fail('ARG', 'not a semaphore key: ' .. Q) end
if not size or size < 1 or permits_of(member) > size then fail('ARG', 'bad size or permit count') end
expect_type(Q, 'zset')
expect_type(holders_key(Q), 'zset')
expect_type(SK, 'string')
expect_type(AK, 'set')
local cur = redis.call('GET', SK)
if cur and not (uint_of(cur) and uint_of(cur) >= 1) then
  fail('CORRUPT', 'semaphore size is not a number: ' .. SK)
end
if not lease_left(lease) then return { 'lost' } end
if not redis.call('ZSCORE', Q, member) then
  -- Re-checking a wait whose entry was removed (revoked, adopted): stop, do not re-queue.
  if recheck then return { 'gone' } end
  -- Joining: the size must match, unless the queue is empty (a leftover size key is stale).
  if cur and tonumber(cur) ~= size and redis.call('ZCARD', Q) > 0 then
    -- Dead holders and waiters go first: maybe nobody is left.
    settle(Q)
    admit(Q, 'semaphore')
    if redis.call('ZCARD', Q) > 0 then return { 'size', tonumber(cur) } end
  end
end
local rev, created = join_queue(Q, AK, lease, member)
if not rev then return { 'gone' } end
if created then redis.call('SET', SK, int(size)) end
local held, left = shared_turn(Q, 'semaphore', member)
if held then return { 'held', rev } end
if try and created then
  leave_unjoined(Q, AK, member)
  if redis.call('ZCARD', Q) == 0 then queue_emptied(Q, 'semaphore') end
  return { 'locked', left }
end
return { 'wait', rev, left }
