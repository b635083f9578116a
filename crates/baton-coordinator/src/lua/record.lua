-- Records the outcome of one attempt, fenced by the attempt number: only the current attempt
-- of a running step counts, so a duplicate or late result is recorded at most once and never
-- overwrites a newer attempt.
-- ARGV after the prelude: step, attempt, kind ('ok' | 'fail' | 'timeout'), payload (output
-- or failure JSON), retryable ('1'/'0'), max_attempts, when a retry would start (unix ms),
-- usage (input tokens, output tokens, cost in nano-dollars, model or ''), dependents
-- (read_steps), sinks (read_list). Usage counts for every attempt that is recorded, failed
-- ones included; a fenced result's does not.
local step = arg()
local attempt = tonumber(arg())
local kind = arg()
local payload = arg()
local retryable = arg() == '1'
local max_attempts = tonumber(arg())
local retry_due = arg()
local usage_in = tonumber(arg())
local usage_out = tonumber(arg())
local usage_cost = tonumber(arg())
local model = arg()

-- One read for the checks and, for a success, what `succeed` needs.
local ok = kind == 'ok'
local dependents, sinks
local read = { 'status', f('s', step), f('a', step), f('d', step), f('ta', step), f('t', step) }
if ok then
  dependents = read_steps()
  sinks = read_list()
  read[7] = 'left'
  read[8] = 'x'
  for i, dep in ipairs(dependents) do
    read[8 + i] = f('w', dep.id)
  end
end
local fields = redis.call('HMGET', job, unpack(read))
local status = fields[1]
if not status then
  return reply('missing', '')
end
if ended(status) then
  return reply('ended', status)
end
local current = fields[2] or ''
local current_attempt = tonumber(fields[3] or '0')
if current ~= 'running' or current_attempt ~= attempt then
  return reply('stale', status, current .. ':' .. current_attempt)
end
if kind == 'timeout' then
  local due = tonumber(fields[4] or '0')
  if due > now then
    return reply('later', status, tostring(due))
  end
end
local started = (fields[5] or '') .. ':' .. (fields[6] or '')
if usage_in > 0 or usage_out > 0 or usage_cost > 0 or model ~= '' then
  redis.call('HINCRBY', job, f('ui', step), usage_in)
  redis.call('HINCRBY', job, f('uo', step), usage_out)
  redis.call('HINCRBY', job, f('uc', step), usage_cost)
  if model ~= '' then
    redis.call('HSET', job, f('um', step), model)
  end
  redis.call('HINCRBY', job, 'ui', usage_in)
  redis.call('HINCRBY', job, 'uo', usage_out)
  redis.call('HINCRBY', job, 'uc', usage_cost)
end

if ok then
  local new_status, items, finish = succeed(step, payload, dependents, sinks, status,
    { unpack(fields, 7, 8 + #dependents) })
  return reply('succeeded', new_status, '', items, started, finish)
end

redis.call('HSET', job, f('e', step), payload)
local base = tonumber(get(f('b', step)) or '0')
if retryable and (attempt - base) < max_attempts then
  redis.call('HSET', job, f('s', step), 'retrying', f('a', step), attempt + 1,
    f('d', step), retry_due)
  touch(false)
  return reply('retry', status, tostring(attempt + 1), nil, started)
end
redis.call('HSET', job, f('s', step), 'escalated', 'status', 'escalated')
redis.call('HDEL', job, f('d', step))
redis.call('HINCRBY', job, 'escalated', 1)
touch(false)
return reply('escalated', 'escalated', '', nil, started)
