-- Applies one decision of the decision core (crates/baton-core) to one job, if the facts it
-- was based on still hold: one atomic script per transition, on one hash slot. It decides
-- nothing; it checks and writes.
-- KEYS[1] = the job hash. ARGV[1] = the TTL to set (ms) or '' to leave it; then five counted
-- lists: guards (field, the value read or '' for absent), counters (field, the amount to
-- decrement by, '1' if the decision expects it to reach zero or below, else '0'), sets
-- (field, value), deletes
-- (field), adds (field, integer).
-- Returns 1 when applied; 0 when a guarded fact changed, having written nothing.
local job = KEYS[1]
local at = 2

local function take()
  local n = tonumber(ARGV[at])
  local first = at + 1
  return n, first
end

-- Lua's unpack takes about 8000 values: calls with long argument lists go in chunks.
local function chunked(command, list, step)
  for i = 1, #list, step do
    redis.call(command, job, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

local guards, g0 = take()
at = g0 + 2 * guards
local counters, c0 = take()
at = c0 + 3 * counters

local writes = {}
if guards + counters > 0 then
  local fields = {}
  for i = 0, guards - 1 do
    fields[#fields + 1] = ARGV[g0 + 2 * i]
  end
  for i = 0, counters - 1 do
    fields[#fields + 1] = ARGV[c0 + 3 * i]
  end
  local values = {}
  for i = 1, #fields, 4000 do
    local part = redis.call('HMGET', job, unpack(fields, i, math.min(i + 3999, #fields)))
    for _, value in ipairs(part) do
      values[#values + 1] = value
    end
    -- ipairs stops at a nil; HMGET gives false for a missing field, so none is skipped.
  end
  for i = 0, guards - 1 do
    if (values[i + 1] or '') ~= ARGV[g0 + 2 * i + 1] then
      return 0
    end
  end
  for i = 0, counters - 1 do
    local left = tonumber(values[guards + i + 1] or '0') - tonumber(ARGV[c0 + 3 * i + 1])
    if (left <= 0) ~= (ARGV[c0 + 3 * i + 2] == '1') then
      return 0
    end
    writes[#writes + 1] = ARGV[c0 + 3 * i]
    writes[#writes + 1] = tostring(left)
  end
end

local sets, s0 = take()
for i = s0, s0 + 2 * sets - 1 do
  writes[#writes + 1] = ARGV[i]
end
at = s0 + 2 * sets
if #writes > 0 then
  chunked('HSET', writes, 4000)
end

local deletes, d0 = take()
if deletes > 0 then
  redis.call('HDEL', job, unpack(ARGV, d0, d0 + deletes - 1))
end
at = d0 + deletes

local adds, a0 = take()
for i = 0, adds - 1 do
  redis.call('HINCRBY', job, ARGV[a0 + 2 * i], ARGV[a0 + 2 * i + 1])
end

if ARGV[1] ~= '' then
  redis.call('PEXPIRE', job, ARGV[1])
end
return 1
