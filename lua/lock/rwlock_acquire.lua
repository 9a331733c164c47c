-- Join a reader-writer lock's queue and report whether this contender owns it (RwLock::read,
-- RwLock::write and the try_ forms; see src/sync/rwlock.rs). Readers wait only for earlier
-- writers; writers wait for everyone earlier. Calling again re-checks and keeps the place.
-- The cost does not depend on how many hold or wait (see admit in lua/prelude/queues.lua).
-- KEYS: rev, leases, rwlock:<name>, attached:<lease>
-- ARGV: lease id, contender ("<lease id>.r<id>" or "<lease id>.w<id>"), try (1 = do not queue), recheck (1 = a waiter asking again)
-- Returns {'held', revision} | {'wait', revision, ms until an owner's lease expires} |
-- {'locked', ms} | {'lost'}.
expect_base()
local Q, AK = KEYS[3], KEYS[4]
local lease, member, try, recheck = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4] == '1'
expect_member(lease, member, AK, 'contender')
if kind_of(Q) ~= 'rwlock' then fail('ARG', 'not a rwlock key: ' .. Q) end
expect_type(Q, 'zset')
expect_type(holders_key(Q), 'zset')
expect_type(AK, 'set')
if not lease_left(lease) then return { 'lost' } end
-- Re-checking a wait whose entry was removed (revoked, adopted): stop, do not re-queue.
if recheck and not redis.call('ZSCORE', Q, member) then return { 'gone' } end
local rev, created = join_queue(Q, AK, lease, member)
if not rev then return { 'gone' } end
local held, left = shared_turn(Q, 'rwlock', member)
if held then return { 'held', rev } end
if try and created then
  leave_unjoined(Q, AK, member)
  return { 'locked', left }
end
return { 'wait', rev, left }
