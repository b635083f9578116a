-- Creates a job if it does not exist. ARGV after the prelude: plan, input, idempotency key,
-- the submitter's traceparent (or ''), then the steps (read_steps: roots are those with no
-- needs).
local plan = arg()
local input = arg()
local idem = arg()
local tp = arg()
local steps = read_steps()
if redis.call('EXISTS', job) == 1 then
  return reply('exists', get('status'))
end
redis.call('HSET', job, 'status', 'running', 'plan', plan, 'input', input, 'created', now,
  'updated', now, 'left', #steps, 'escalated', 0)
if idem ~= '' then
  redis.call('HSET', job, 'idem', idem)
end
if tp ~= '' then
  redis.call('HSET', job, 'tp', tp)
end
local items = {}
for _, step in ipairs(steps) do
  if #step.needs == 0 then
    redis.call('HSET', job, f('s', step.id), 'running', f('a', step.id), 1, f('b', step.id), 0,
      f('w', step.id), 0, f('d', step.id), now + step.timeout, f('t', step.id), now,
      f('ta', step.id), now)
    items[#items + 1] = dispatch_item(step.id, 1, step.needs)
  else
    redis.call('HSET', job, f('s', step.id), 'waiting', f('a', step.id), 0, f('b', step.id), 0,
      f('w', step.id), #step.needs)
  end
end
touch(false)
return reply('created', 'running', '', items)
