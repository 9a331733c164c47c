-- Keys starting with a prefix, in byte order, at most `limit`, skipping keys whose lease is
-- dead (Client::get_prefix; see src/kv.rs). Read-only.
-- KEYS: rev, leases, keys
-- ARGV: prefix, limit, start after (a key name, or '' to start at the prefix)
-- Returns {more (1/0), name, value, lease, crev, mrev, ver, name, ...}.
expect_base()
local IDX = KEYS[3]
if IDX ~= KEYS_INDEX then fail('ARG', 'keys do not match the key index') end
expect_type(IDX, 'zset')
local prefix, limit, after = ARGV[1], uint_of(ARGV[2]), ARGV[3]
if not limit or limit < 1 then fail('ARG', 'limit must be at least 1') end
local lo = '[' .. prefix
if after ~= '' then lo = '(' .. after end
local hi = '[' .. prefix .. '\255'
local out = { 0 }
local n, offset = 0, 0
while n < limit do
  local names = redis.call('ZRANGEBYLEX', IDX, lo, hi, 'LIMIT', offset, 64)
  if #names == 0 then return out end
  offset = offset + #names
  for _, name in ipairs(names) do
    local k = P .. KV .. name
    if redis.call('TYPE', k)['ok'] == 'hash' then
      local f = redis.call('HMGET', k, 'v', 'lease', 'crev', 'mrev', 'ver')
      local lease = f[2] or ''
      if f[1] and (lease == '' or lease_left(lease)) then
        if n == limit then
          out[1] = 1
          return out
        end
        for _, x in ipairs({ name, f[1], lease, kv_counter(k, f[3]), kv_counter(k, f[4]),
            kv_counter(k, f[5]) }) do
          out[#out + 1] = x
        end
        n = n + 1
      end
    end
  end
end
-- Exactly `limit` found: is there another live one?
local names = redis.call('ZRANGEBYLEX', IDX, lo, hi, 'LIMIT', offset, 64)
for _, name in ipairs(names) do
  local k = P .. KV .. name
  if redis.call('TYPE', k)['ok'] == 'hash' then
    local f = redis.call('HMGET', k, 'v', 'lease')
    if f[1] and ((f[2] or '') == '' or lease_left(f[2])) then
      out[1] = 1
      break
    end
  end
end
return out
