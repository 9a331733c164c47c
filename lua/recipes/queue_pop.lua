-- Take the first item of a queue (Queue::dequeue; see src/recipes/queue.rs), or put one back exactly
-- where it was (a dequeue whose caller went away).
-- KEYS: rev, leases, queue:<name> or pqueue:<name>
-- ARGV: '' to pop, or priority and member to restore
-- Returns nil (empty) or {priority, member}.
expect_base()
local Q = KEYS[3]
local kind = kind_of(Q)
if kind ~= 'queue' and kind ~= 'pqueue' then fail('ARG', 'not a queue key: ' .. Q) end
expect_type(Q, 'zset')
if ARGV[1] ~= '' then
  redis.call('ZADD', Q, ARGV[1], ARGV[2])
  publish(P .. kind .. '-changes:' .. string.sub(Q, #P + #kind + 2), int(next_rev()))
  return nil
end
local item = redis.call('ZPOPMIN', Q)
if #item == 0 then return nil end
touch_rev()
return { item[2], item[1] }
