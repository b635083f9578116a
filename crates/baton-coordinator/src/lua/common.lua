-- Shared prelude of every job script (prepended by store.rs). Each script is one atomic
-- transition of one job: KEYS[1] is the job hash (one hash slot per job).
-- ARGV[1] = now (unix ms), ARGV[2] = TTL while running (ms), ARGV[3] = retention after the
-- job ends (ms). Further ARGV are read in order with `arg()`.
local job = KEYS[1]
local now = tonumber(ARGV[1])
-- Stored as given: Lua would format a number with printf("%.14g"), which costs Redis more
-- than the rest of a field write.
local now_s = ARGV[1]
local cursor = 4

local function arg()
  local value = ARGV[cursor]
  cursor = cursor + 1
  return value
end

local function f(prefix, step)
  return prefix .. '.' .. step
end

local function get(field)
  return redis.call('HGET', job, field)
end

-- Refresh the TTL on every transition; a finished job keeps its state for the retention.
local function expire(finished)
  if finished then
    redis.call('PEXPIRE', job, ARGV[3])
  else
    redis.call('PEXPIRE', job, ARGV[2])
  end
end

-- `updated` and the TTL, for transitions whose writes did not set `updated` already.
local function touch(finished)
  redis.call('HSET', job, 'updated', now_s)
  expire(finished)
end

-- HSETs a flat field, value, field, value… list in as few calls as Lua allows (unpack takes
-- about 8000 values; 4000 keeps pairs together).
local function hset_all(list)
  for i = 1, #list, 4000 do
    redis.call('HSET', job, unpack(list, i, math.min(i + 3999, #list)))
  end
end

-- Appends values to a list.
local function push(list, ...)
  for i = 1, select('#', ...) do
    list[#list + 1] = select(i, ...)
  end
end

-- Reads "n, then n step specs": id, deadline of an attempt starting now (unix ms, computed by
-- the caller), number of needs, the needs.
local function read_steps()
  local steps = {}
  for _ = 1, tonumber(arg()) do
    local step = { id = arg(), deadline = arg(), needs = {} }
    for _ = 1, tonumber(arg()) do
      step.needs[#step.needs + 1] = arg()
    end
    steps[#steps + 1] = step
  end
  return steps
end

local function read_list()
  local list = {}
  for _ = 1, tonumber(arg()) do
    list[#list + 1] = arg()
  end
  return list
end

-- A dispatch order for Rust: step, attempt, input override (or ''), outputs of its needs.
-- Numbers given to Redis are formatted with printf; constants are passed as strings.
-- The first item also reads the job input, which the reply carries with the items.
local job_input = nil
local function dispatch_item(step, attempt, needs)
  local fields = { f('i', step) }
  for i, need in ipairs(needs) do
    fields[i + 1] = f('o', need)
  end
  local with_input = job_input == nil
  if with_input then
    fields[#fields + 1] = 'input'
  end
  local values = redis.call('HMGET', job, unpack(fields))
  if with_input then
    job_input = values[#fields] or 'null'
  end
  local item = { step, tostring(attempt), values[1] or '' }
  for i = 1, #needs do
    item[#item + 1] = values[i + 1] or 'null'
  end
  return item
end

-- What Rust needs once a job has ended, as JSON: token and cost totals, the idempotency
-- mapping to retire, and the error of a failed job.
local function ending()
  local v = redis.call('HMGET', job, 'ui', 'uo', 'uc', 'idem', 'error')
  -- HMGET gives false for a missing field; `or nil` leaves it out of the JSON.
  return cjson.encode({ ui = v[1] or nil, uo = v[2] or nil, uc = v[3] or nil,
    idem = v[4] or nil, error = v[5] or nil })
end

local function ended(status)
  return status == 'succeeded' or status == 'failed' or status == 'cancelled'
end

-- Reply: outcome, job status, detail, job input (only when something is dispatched),
-- started ('<attempt start ms>:<step start ms>' of the step a result was recorded for, or
-- ''), the job's ending (JSON, only when this transition ended it), then the dispatch items.
local function reply(outcome, status, detail, items, started, finished)
  local out = { outcome, status, detail or '', '', started or '', '' }
  if finished and ended(status) then
    out[6] = ending()
  end
  if items and #items > 0 then
    out[4] = job_input or get('input')
    for i, item in ipairs(items) do
      out[6 + i] = item
    end
  end
  return out
end

-- Records a step's success and starts every dependent whose needs are now all met; sets
-- `updated` (callers then only `expire`). `status` is the job's status before. Returns the
-- job status and the dispatch items.
local function succeed(step, output, dependents, sinks, status)
  redis.call('HSET', job, f('s', step), 'succeeded', f('o', step), output, 'updated', now_s)
  redis.call('HDEL', job, f('d', step), f('i', step))
  local left = redis.call('HINCRBY', job, 'left', '-1')
  local items = {}
  -- Fields of the dependents that start and of the job's end, written in one go.
  local writes = {}
  for _, dep in ipairs(dependents) do
    -- Each need succeeds once (results are fenced), so the count reaches 0 exactly once:
    -- when the last need succeeds, with the dependent still waiting.
    local waiting = redis.call('HINCRBY', job, f('w', dep.id), '-1')
    if waiting == 0 then
      push(writes, f('s', dep.id), 'running', f('a', dep.id), '1', f('d', dep.id), dep.deadline,
        f('t', dep.id), now_s, f('ta', dep.id), now_s)
      items[#items + 1] = dispatch_item(dep.id, '1', dep.needs)
    end
  end
  if left <= 0 then
    local output
    if #sinks == 1 then
      output = get(f('o', sinks[1])) or 'null'
    else
      -- Step ids are [A-Za-z0-9_-]+, so they need no JSON escaping.
      local parts = {}
      for i, sink in ipairs(sinks) do
        parts[i] = '"' .. sink .. '":' .. (get(f('o', sink)) or 'null')
      end
      output = '{' .. table.concat(parts, ',') .. '}'
    end
    status = 'succeeded'
    push(writes, 'status', status, 'output', output)
  end
  hset_all(writes)
  return status, items
end

