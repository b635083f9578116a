-- Creates a job if it does not exist. ARGV after the prelude: plan, input, idempotency key,
-- the submitter's traceparent (or ''), the steps (read_steps), then the reused outputs: a
-- count, then (step, output JSON) pairs (a rerun: those steps start succeeded, with no
-- attempt). Every other step starts running when all its needs are reused (or it has
-- none), else waiting.
local plan = arg()
local input = arg()
local idem = arg()
local tp = arg()
local steps = read_steps()
local reused = {}
local reused_count = tonumber(arg())
for _ = 1, reused_count do
  local id = arg()
  reused[id] = arg()
end
if redis.call('EXISTS', job) == 1 then
  return reply('exists', get('status'))
end
-- Every field of the new job, written in one go.
local fields = {}
push(fields, 'status', 'running', 'plan', plan, 'input', input, 'created', now_s, 'updated', now_s,
  'left', tostring(#steps - reused_count), 'escalated', '0')
if idem ~= '' then
  push(fields, 'idem', idem)
end
if tp ~= '' then
  push(fields, 'tp', tp)
end
for id, output in pairs(reused) do
  push(fields, f('s', id), 'succeeded', f('o', id), output, f('a', id), '0', f('b', id), '0',
    f('w', id), '0')
end
local starting = {}
for _, step in ipairs(steps) do
  if not reused[step.id] then
    local waiting = 0
    for _, need in ipairs(step.needs) do
      if not reused[need] then
        waiting = waiting + 1
      end
    end
    if waiting == 0 then
      push(fields, f('s', step.id), 'running', f('a', step.id), '1', f('b', step.id), '0',
        f('w', step.id), '0', f('d', step.id), step.deadline, f('t', step.id), now_s,
        f('ta', step.id), now_s)
      starting[#starting + 1] = step
    else
      push(fields, f('s', step.id), 'waiting', f('a', step.id), '0', f('b', step.id), '0',
        f('w', step.id), tostring(waiting))
    end
  end
end
hset_all(fields)
local items = {}
for _, step in ipairs(starting) do
  items[#items + 1] = dispatch_item(step.id, '1', step.needs)
end
expire(false)
return reply('created', 'running', '', items)
