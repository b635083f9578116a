-- Records the outcome of one attempt, fenced by the attempt number: only the current attempt
-- of a running step counts, so a duplicate or late result is recorded at most once and never
-- overwrites a newer attempt.
-- ARGV after the prelude: step, attempt, kind ('ok' | 'fail' | 'timeout'), payload (output
-- or failure JSON), retryable ('1'/'0'), max_attempts, retry delay (ms), dependents
-- (read_steps), sinks (read_list).
local step = arg()
local attempt = tonumber(arg())
local kind = arg()
local payload = arg()
local retryable = arg() == '1'
local max_attempts = tonumber(arg())
local delay = tonumber(arg())

local status = get('status')
if not status then
  return reply('missing', '')
end
if ended(status) then
  return reply('ended', status)
end
local current = get(f('s', step)) or ''
local current_attempt = tonumber(get(f('a', step)) or '0')
if current ~= 'running' or current_attempt ~= attempt then
  return reply('stale', status, current .. ':' .. current_attempt)
end
if kind == 'timeout' then
  local due = tonumber(get(f('d', step)) or '0')
  if due > now then
    return reply('later', status, tostring(due))
  end
end

if kind == 'ok' then
  local dependents = read_steps()
  local sinks = read_list()
  local new_status, items = succeed(step, payload, dependents, sinks)
  touch(ended(new_status))
  return reply('succeeded', new_status, '', items)
end

redis.call('HSET', job, f('e', step), payload)
local base = tonumber(get(f('b', step)) or '0')
if retryable and (attempt - base) < max_attempts then
  redis.call('HSET', job, f('s', step), 'retrying', f('a', step), attempt + 1,
    f('d', step), now + delay)
  touch(false)
  return reply('retry', status, tostring(attempt + 1))
end
redis.call('HSET', job, f('s', step), 'escalated', 'status', 'escalated')
redis.call('HDEL', job, f('d', step))
redis.call('HINCRBY', job, 'escalated', 1)
touch(false)
return reply('escalated', 'escalated')
