-- A human resolves an escalated step. ARGV after the prelude: step, action ('output' |
-- 'retry' | 'fail'), payload (output JSON | input JSON or '' | reason), deadline of a retry (unix ms),
-- dependents (read_steps), sinks (read_list), needs of the step (read_list).
local step = arg()
local action = arg()
local payload = arg()
local deadline = arg()
local dependents = read_steps()
local sinks = read_list()
local needs = read_list()

local status = get('status')
if not status then
  return reply('missing', '')
end
if ended(status) then
  return reply('ended', status)
end
local current = get(f('s', step)) or ''
if current ~= 'escalated' then
  return reply('not_escalated', status, current)
end
local open = redis.call('HINCRBY', job, 'escalated', -1)
local next_status = 'running'
if open > 0 then
  next_status = 'escalated'
end
redis.call('HSET', job, 'status', next_status)

if action == 'output' then
  local new_status, items, finish = succeed(step, payload, dependents, sinks, next_status)
  return reply('resolved', new_status, '', items, nil, finish)
elseif action == 'retry' then
  -- A fresh retry budget: attempts already spent become the base.
  local attempt = tonumber(get(f('a', step)) or '0')
  redis.call('HSET', job, f('s', step), 'running', f('a', step), attempt + 1,
    f('b', step), attempt, f('d', step), deadline, f('ta', step), now_s)
  if payload ~= '' then
    redis.call('HSET', job, f('i', step), payload)
  end
  touch(false)
  return reply('resolved', next_status, '', { dispatch_item(step, attempt + 1, needs) })
else
  redis.call('HSET', job, f('s', step), 'failed', 'status', 'failed', 'error', payload)
  touch(true)
  return reply('resolved', 'failed', '', nil, nil, true)
end
