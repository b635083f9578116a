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

-- A finished job keeps its state for the retention. A running job's TTL is set again when
-- at least half of it has run since it was last set (`x`, unix ms), so a running job always
-- has more than half its running TTL left after a transition.
local function expire(finished)
  if finished then
    redis.call('PEXPIRE', job, ARGV[3])
  else
    redis.call('PEXPIRE', job, ARGV[2])
  end
end

-- For transitions that write their fields in one HSET: `x` as read before (or false), and
-- the list of writes, to which `x` is added when the running TTL is set again.
local function refresh(x, writes)
  if now - tonumber(x or '0') >= tonumber(ARGV[2]) / 2 then
    redis.call('PEXPIRE', job, ARGV[2])
    writes[#writes + 1] = 'x'
    writes[#writes + 1] = now_s
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

-- Dispatch orders for Rust, one per start ({ id, attempt, needs }): step, attempt, input
-- override (or ''), outputs of its needs. All of them are read with one HMGET, together with
-- the job input. `known` maps step ids to outputs already in hand (not read again).
-- Numbers given to Redis are formatted with printf; constants are passed as strings.
local job_input = nil
local function dispatch(starts, known)
  local fields = { 'input' }
  for _, start in ipairs(starts) do
    fields[#fields + 1] = f('i', start.id)
    for _, need in ipairs(start.needs) do
      if not (known and known[need]) then
        fields[#fields + 1] = f('o', need)
      end
    end
  end
  local values = redis.call('HMGET', job, unpack(fields))
  job_input = values[1] or 'null'
  local at = 2
  local items = {}
  for i, start in ipairs(starts) do
    local item = { start.id, start.attempt, values[at] or '' }
    at = at + 1
    for _, need in ipairs(start.needs) do
      local output = known and known[need]
      if not output then
        output = values[at] or 'null'
        at = at + 1
      end
      item[#item + 1] = output
    end
    items[i] = item
  end
  return items
end

local function dispatch_item(step, attempt, needs)
  return dispatch({ { id = step, attempt = tostring(attempt), needs = needs } })[1]
end

-- What Rust needs once a job has ended, as JSON: token and cost totals, the idempotency
-- mapping to retire, and the error of a failed job. `v` holds those five fields, in this
-- order, if they were read already.
local ENDING = { 'ui', 'uo', 'uc', 'idem', 'error' }
local function ending(v)
  v = v or redis.call('HMGET', job, unpack(ENDING))
  -- HMGET gives false for a missing field; `or nil` leaves it out of the JSON.
  return cjson.encode({ ui = v[1] or nil, uo = v[2] or nil, uc = v[3] or nil,
    idem = v[4] or nil, error = v[5] or nil })
end

local function ended(status)
  return status == 'succeeded' or status == 'failed' or status == 'cancelled'
end

-- Reply: outcome, job status, detail, job input (only when something is dispatched),
-- started ('<attempt start ms>:<step start ms>' of the step a result was recorded for, or
-- ''), the job's ending (JSON, only when this transition ended it; `finished` is true, or
-- the ending already built), then the dispatch items.
local function reply(outcome, status, detail, items, started, finished)
  local out = { outcome, status, detail or '', '', started or '', '' }
  if type(finished) == 'string' then
    out[6] = finished
  elseif finished and ended(status) then
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

-- Records a step's success and starts every dependent whose needs are now all met, with
-- one read and one write of the job hash. `status` is the job's status before; `known`, if
-- the caller read them already, holds `left`, `x` and the dependents' waiting counts (in
-- the order of `dependents`). Sets `updated` and the TTL. Returns the job status, the
-- dispatch items and the job's ending (JSON, when this success ended it).
local function succeed(step, output, dependents, sinks, status, known)
  if not known then
    local fields = { 'left', 'x' }
    for i, dep in ipairs(dependents) do
      fields[i + 2] = f('w', dep.id)
    end
    known = redis.call('HMGET', job, unpack(fields))
  end
  redis.call('HDEL', job, f('d', step), f('i', step))
  local left = tonumber(known[1] or '0') - 1
  local writes = { f('s', step), 'succeeded', f('o', step), output, 'updated', now_s,
    'left', tostring(left) }
  local starts = {}
  for i, dep in ipairs(dependents) do
    -- Each need succeeds once (results are fenced), so the count reaches 0 exactly once:
    -- when the last need succeeds, with the dependent still waiting.
    local waiting = tonumber(known[i + 2] or '0') - 1
    local n = #writes
    writes[n + 1] = f('w', dep.id)
    writes[n + 2] = tostring(waiting)
    if waiting == 0 then
      writes[n + 3] = f('s', dep.id)
      writes[n + 4] = 'running'
      writes[n + 5] = f('a', dep.id)
      writes[n + 6] = '1'
      writes[n + 7] = f('d', dep.id)
      writes[n + 8] = dep.deadline
      writes[n + 9] = f('t', dep.id)
      writes[n + 10] = now_s
      writes[n + 11] = f('ta', dep.id)
      writes[n + 12] = now_s
      starts[#starts + 1] = { id = dep.id, attempt = '1', needs = dep.needs }
    end
  end
  local finish = nil
  if left <= 0 then
    -- The sinks' outputs (this step's is in hand) and the job's ending, in one read.
    local fields = {}
    for _, sink in ipairs(sinks) do
      if sink ~= step then
        fields[#fields + 1] = f('o', sink)
      end
    end
    for _, name in ipairs(ENDING) do
      fields[#fields + 1] = name
    end
    local values = redis.call('HMGET', job, unpack(fields))
    local at = 1
    local outputs = {}
    for i, sink in ipairs(sinks) do
      if sink == step then
        outputs[i] = output
      else
        outputs[i] = values[at] or 'null'
        at = at + 1
      end
    end
    local job_output = outputs[1] or 'null'
    if #sinks ~= 1 then
      -- Step ids are [A-Za-z0-9_-]+, so they need no JSON escaping.
      for i, sink in ipairs(sinks) do
        outputs[i] = '"' .. sink .. '":' .. outputs[i]
      end
      job_output = '{' .. table.concat(outputs, ',') .. '}'
    end
    status = 'succeeded'
    writes[#writes + 1] = 'status'
    writes[#writes + 1] = status
    writes[#writes + 1] = 'output'
    writes[#writes + 1] = job_output
    finish = ending({ unpack(values, at, at + 4) })
    redis.call('PEXPIRE', job, ARGV[3])
  else
    refresh(known[2], writes)
  end
  hset_all(writes)
  local items = {}
  if #starts > 0 then
    items = dispatch(starts, { [step] = output })
  end
  return status, items, finish
end
