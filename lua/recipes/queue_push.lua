-- Add an item to a queue (Queue::enqueue, PriorityQueue::enqueue; see src/recipes/queue.rs). Items
-- are data, not attached to any lease. Lower priority numbers come out first, FIFO within a
-- priority: the member starts with the zero-padded revision, and equal scores sort by member.
-- KEYS: rev, leases, queue:<name> or pqueue:<name>
-- ARGV: priority, value
-- Returns the revision of the item.
expect_base()
local Q = KEYS[3]
local kind = kind_of(Q)
if kind ~= 'queue' and kind ~= 'pqueue' then fail('ARG', 'not a queue key: ' .. Q) end
local prio = uint_of(ARGV[1])
if not prio then fail('ARG', 'priority must be a whole number >= 0') end
expect_type(Q, 'zset')
local rev = next_rev()
redis.call('ZADD', Q, int(prio), string.format('%020d', rev) .. ' ' .. ARGV[2])
publish(P .. kind .. '-changes:' .. string.sub(Q, #P + #kind + 2), int(rev))
return rev
