-- Fires a retry timer: when the backoff of (step, attempt) is over, the attempt starts.
-- ARGV after the prelude: step, attempt, deadline of the attempt (unix ms), needs (read_list).
local step = arg()
local attempt = tonumber(arg())
local deadline = arg()
local needs = read_list()

local status = get('status')
if not status then
  return reply('missing', '')
end
if ended(status) then
  return reply('ended', status)
end
local current = get(f('s', step)) or ''
if current ~= 'retrying' or tonumber(get(f('a', step)) or '0') ~= attempt then
  return reply('stale', status, current)
end
local due = tonumber(get(f('d', step)) or '0')
if due > now then
  return reply('later', status, tostring(due))
end
redis.call('HSET', job, f('s', step), 'running', f('d', step), deadline, f('ta', step), now_s)
touch(false)
return reply('dispatched', status, '', { dispatch_item(step, attempt, needs) })
