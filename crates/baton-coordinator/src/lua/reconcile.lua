-- Keeps the reconciler's note on a running attempt (where its task sits in the broker), but
-- only while that attempt is still the step's running attempt: a note never outlives the
-- attempt it describes, and never creates the hash of a job that is gone.
-- ARGV after the prelude: step, attempt, note.
local step = arg()
local attempt = arg()
local note = arg()
if get(f('s', step)) ~= 'running' or get(f('a', step)) ~= attempt then
  return 0
end
redis.call('HSET', job, f('q', step), note)
return 1
