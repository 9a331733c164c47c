-- Keys starting with a prefix, in byte order, skipping keys whose lease is dead
-- (Client::get_prefix; see src/kv.rs). One call looks at no more than 256 index entries and
-- returns no more than `bytes` of keys and values (plus one entry), so no call stalls Redis
-- whatever the index holds: the client calls again from the resume point. Index entries whose
-- key is gone (deleted or evicted behind leasehold's back) are removed on the way.
-- KEYS: rev, leases, keys
-- ARGV: prefix, limit, start after (a key name, or '' to start at the prefix), bytes
-- Returns {more (1: index entries follow the resume point), resume after (the last entry looked
-- at, or `start after` when none was), name, value, lease, crev, mrev, ver, name, ...}.
expect_base()
local IDX = KEYS[3]
if IDX ~= KEYS_INDEX then fail('ARG', 'keys do not match the key index') end
expect_type(IDX, 'zset')
local prefix, limit, after, max_bytes = ARGV[1], uint_of(ARGV[2]), ARGV[3], uint_of(ARGV[4])
if not limit or limit < 1 then fail('ARG', 'limit must be at least 1') end
if not max_bytes or max_bytes < 1 then fail('ARG', 'bytes must be at least 1') end
local LOOK = 256
local lo = after ~= '' and ('(' .. after) or ('[' .. prefix)
local hi = '[' .. prefix .. '\255'
local out = { 0, after }
local n, seen, bytes = 0, 0, 0
while n < limit and seen < LOOK and bytes < max_bytes do
  local names = redis.call('ZRANGEBYLEX', IDX, lo, hi, 'LIMIT', 0, math.min(64, LOOK - seen))
  if #names == 0 then return out end
  for _, name in ipairs(names) do
    seen = seen + 1
    out[2] = name
    lo = '(' .. name
    local k = P .. KV .. name
    local kind = redis.call('TYPE', k)['ok']
    if kind == 'none' then
      redis.call('ZREM', IDX, name)
    elseif kind == 'hash' then
      local f = redis.call('HMGET', k, 'v', 'lease', 'crev', 'mrev', 'ver')
      local lease = f[2] or ''
      if f[1] and (lease == '' or lease_left(lease)) then
        for _, x in ipairs({ name, f[1], lease, kv_counter(k, f[3]), kv_counter(k, f[4]),
            kv_counter(k, f[5]) }) do
          out[#out + 1] = x
        end
        n = n + 1
        bytes = bytes + #name + #f[1]
      end
    end
    if n == limit or bytes >= max_bytes then break end
  end
end
-- Stopped early: does anything follow the resume point?
if #redis.call('ZRANGEBYLEX', IDX, '(' .. out[2], hi, 'LIMIT', 0, 1) > 0 then out[1] = 1 end
return out
