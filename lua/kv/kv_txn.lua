-- A transaction on keys (etcd's Txn().If(...).Then(...).Else(...)), with conditions on keys,
-- on lock ownership and on leases (Client::txn, the guards' put and delete; see
-- src/kv/txn.rs): if every compare holds, the `then` ops run, else the `else` ops, all in this
-- one call.
-- KEYS: rev, leases, keys (the key index)
-- ARGV: number of compares, of `then` ops, of `else` ops; then 4 fields per item, compares
-- first, then `then` ops, then `else` ops:
--   'v=' / 'v!' name value         a live key's value is / is not `value` (an absent key has none)
--   'm=' / 'm<' / 'm>' name rev    the key's mod revision (0 when absent) is =, <, > `rev`
--   'x' name                       the key is live
--   'n' name                       the key is absent (or its lease is dead)
--   'h' queue member revision      that lock entry owns its lock (mutex, rwlock or semaphore)
--   'a' lease                      the lease is alive
--   'p' name value lease           put (lease '' = none)
--   'd' name                       delete
-- Every key it touches is derived from these names in the namespace, so one slot; each is
-- type-checked before the first write.
-- Returns {1 when the `then` branch ran or 0 for `else`, the revision after its writes (the
-- counter when it wrote nothing)}, or {'lost', lease} when a put of the branch that would run
-- names a lease that is not alive (nothing written).
local MAX_ITEMS = 128
expect_base()
if KEYS[3] ~= KEYS_INDEX then fail('ARG', 'keys do not match the key index') end
expect_type(KEYS_INDEX, 'zset')
local ncmp, nthen, nelse = uint_of(ARGV[1]), uint_of(ARGV[2]), uint_of(ARGV[3])
if not (ncmp and nthen and nelse) or ncmp + nthen + nelse > MAX_ITEMS
  or #ARGV ~= 3 + 4 * (ncmp + nthen + nelse) then
  fail('ARG', 'malformed transaction')
end
local COMPARES = { ['v='] = true, ['v!'] = true, ['m='] = true, ['m<'] = true, ['m>'] = true,
  x = true, n = true, h = true, a = true }
local OPS = { p = true, d = true }
local items = {}
for i = 1, ncmp + nthen + nelse do
  local at = 4 + 4 * (i - 1)
  local it = { tag = ARGV[at], a = ARGV[at + 1], b = ARGV[at + 2], c = ARGV[at + 3] }
  local kinds = i <= ncmp and COMPARES or OPS
  if not kinds[it.tag] or it.a == '' then fail('ARG', 'malformed transaction item ' .. i) end
  if it.tag == 'h' then
    it.rev = uint_of(it.c)
    if not it.rev or string.sub(it.a, 1, #P) ~= P then fail('ARG', 'malformed lock entry ' .. i) end
    expect_type(it.a, 'zset')
  elseif it.tag == 'a' then
    if not is_lease_id(it.a) then fail('ARG', 'not a lease id: ' .. it.a) end
  else
    expect_type(kv_key(it.a), 'hash')
    if string.sub(it.tag, 1, 1) == 'm' then
      it.rev = uint_of(it.b)
      if not it.rev then fail('ARG', 'malformed revision in item ' .. i) end
    elseif it.tag == 'p' and it.c ~= '' then
      if not is_lease_id(it.c) then fail('ARG', 'not a lease id: ' .. it.c) end
      expect_type(attached_key(it.c), 'set')
    end
  end
  items[i] = it
end

-- A live key's value and mod revision, or nil.
local function live(name)
  local k = kv_key(name)
  local f = redis.call('HMGET', k, 'v', 'lease', 'mrev')
  if not f[1] then return nil end
  local lease = f[2] or ''
  if lease ~= '' and not lease_left(lease) then return nil end
  return f[1], tonumber(kv_counter(k, f[3]))
end

local function compare_holds(it)
  local tag = it.tag
  if tag == 'h' then
    return tonumber(redis.call('ZSCORE', it.a, it.b)) == it.rev and owns_now(it.a, it.b)
  elseif tag == 'a' then
    return lease_left(it.a) ~= nil
  end
  local value, mrev = live(it.a)
  if tag == 'v=' then return value == it.b end
  if tag == 'v!' then return value ~= it.b end
  if tag == 'x' then return value ~= nil end
  if tag == 'n' then return value == nil end
  mrev = mrev or 0
  if tag == 'm=' then return mrev == it.rev end
  if tag == 'm<' then return mrev < it.rev end
  return mrev > it.rev
end

local ok = true
for i = 1, ncmp do
  if not compare_holds(items[i]) then ok = false break end
end
local from, to = ncmp + 1, ncmp + nthen
if not ok then from, to = ncmp + nthen + 1, ncmp + nthen + nelse end
for i = from, to do
  local it = items[i]
  if it.tag == 'p' and it.c ~= '' and not lease_left(it.c) then return { 'lost', it.c } end
end
for i = from, to do
  local it = items[i]
  if it.tag == 'p' then kv_put_apply(it.a, it.b, it.c) else kv_delete_apply(it.a) end
end
return { ok and 1 or 0, rev_now }
