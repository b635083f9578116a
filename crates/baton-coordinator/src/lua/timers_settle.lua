-- Settles a claimed timer: removes it (ARGV[3] == '') or moves it to ARGV[3], but only if its
-- score is still the claim's lease (ARGV[2]); a newer schedule of the same member wins.
-- KEYS[1] = timers zset; ARGV = member, lease score, new score or ''.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
  return 0
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[1])
end
return 1
