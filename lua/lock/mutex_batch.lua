-- Several mutex_acquire / mutex_release calls of one client in one script call (src/redis/batch.rs).
-- src/redis/scripts.rs compiles this file after the core prelude and the two scripts, each wrapped as
-- `local function <name>(KEYS, ARGV) ... end`, so the calls share what a script call costs
-- before its first command (the EVALSHA, the prelude, the TIME and the revision read), each
-- lease is looked up once, the revision counter is written once, and Redis reads one request
-- instead of one per call.
--
-- Each call runs as it would alone: in its own pcall, so an error fails that call only (the
-- scripts raise before their first write, so a failed call leaves Redis as it was); with the
-- per-call memos reset; its revision taken from the counter as the calls before it left it, as
-- if they had been separate script calls in the same order.
-- KEYS: rev, leases, then each call's own keys after its first two (which are rev and leases)
-- ARGV: per call: script name, number of its own keys, number of arguments, the arguments
-- Returns a flat array, two items per call: 1 and its reply, or 0 and its error message.

local OPS = { mutex_acquire = mutex_acquire, mutex_release = mutex_release }

-- Check the whole layout before running any call: a malformed batch runs nothing.
local calls, ki, ai = {}, 3, 1
while ai <= #ARGV do
  local f, nk, na = OPS[ARGV[ai]], uint_of(ARGV[ai + 1]), uint_of(ARGV[ai + 2])
  if not f or not nk or not na or ai + 2 + na > #ARGV or ki + nk - 1 > #KEYS then
    fail('ARG', 'malformed batch at argument ' .. ai)
  end
  calls[#calls + 1] = { f, ki, nk, ai + 3, na }
  ki, ai = ki + nk, ai + 3 + na
end
if ki - 1 ~= #KEYS then fail('ARG', 'malformed batch: ' .. (#KEYS - ki + 1) .. ' keys left over') end

-- The revision counter is read once (a foreign value fails the whole batch here, as it would
-- fail every call) and written once, after the last call: the calls see it move on in between
-- exactly as separate script calls would. Leases are looked up once per batch (see lease_left):
-- neither script writes the registry.
local next_call, finish = begin_batch()

local out = {}
for _, c in ipairs(calls) do
  local f, k0, nk, a0, na = c[1], c[2], c[3], c[4], c[5]
  local keys, args = { REV, REG }, {}
  for j = 0, nk - 1 do keys[3 + j] = KEYS[k0 + j] end
  for j = 0, na - 1 do args[1 + j] = ARGV[a0 + j] end
  -- What a script run remembers about itself (one revision bump, its own lease) is per call.
  next_call()
  local ok, r = pcall(f, keys, args)
  if ok then
    -- nil would end the array early (Lua tables stop at the first nil); false is a null reply.
    out[#out + 1] = 1
    if r == nil then r = false end
    out[#out + 1] = r
  else
    out[#out + 1] = 0
    if type(r) == 'table' then r = r.err end
    out[#out + 1] = tostring(r)
  end
end
finish()
return out
