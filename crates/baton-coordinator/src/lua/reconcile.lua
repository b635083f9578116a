-- Keeps the reconciler's note on a running attempt (where its task sits in the broker), but
-- only while that attempt is still the step's running attempt: a note never outlives the
-- attempt it describes, and never creates the hash of a job that is gone.
-- KEYS[1] = the job hash; ARGV = step, attempt, note.
local job, step = KEYS[1], ARGV[1]
if redis.call('HGET', job, 's.' .. step) ~= 'running'
  or redis.call('HGET', job, 'a.' .. step) ~= ARGV[2] then
  return 0
end
redis.call('HSET', job, 'q.' .. step, ARGV[3])
return 1
