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
-- Claims the job with its status: an existing job is left alone.
if redis.call('HSETNX', job, 'status', 'running') == 0 then
  return reply('exists', get('status'))
end
-- Every other field of the new job, written in one go. A field left out reads as its
-- default: attempt 0, no budget raise (`b`), waiting count 0.
local fields = {}
push(fields, 'plan', plan, 'input', input, 'created', now_s, 'updated', now_s, 'x', now_s,
  'left', tostring(#steps - reused_count), 'escalated', '0')
if idem ~= '' then
  push(fields, 'idem', idem)
end
if tp ~= '' then
  push(fields, 'tp', tp)
end
for id, output in pairs(reused) do
  push(fields, f('s', id), 'succeeded', f('o', id), output)
end
-- The steps that start now get their inputs from what is in hand: the job input and the
-- reused outputs.
job_input = input
local items = {}
for _, step in ipairs(steps) do
  if not reused[step.id] then
    local waiting = 0
    for _, need in ipairs(step.needs) do
      if not reused[need] then
        waiting = waiting + 1
      end
    end
    if waiting == 0 then
      push(fields, f('s', step.id), 'running', f('a', step.id), '1', f('d', step.id),
        step.deadline, f('t', step.id), now_s, f('ta', step.id), now_s)
      local item = { step.id, '1', '' }
      for _, need in ipairs(step.needs) do
        item[#item + 1] = reused[need]
      end
      items[#items + 1] = item
    else
      push(fields, f('s', step.id), 'waiting', f('w', step.id), tostring(waiting))
    end
  end
end
hset_all(fields)
expire(false)
return reply('created', 'running', '', items)
