-- Trims a job's decision log that outgrew its bound, keeping the newest entries: about
-- three quarters of the bound, cut at an entry boundary, so trims stay rare.
-- KEYS[1] = the log (newline-delimited JSON), KEYS[2] = the job hash (same hash slot).
-- ARGV[1] = most bytes kept. Counts the dropped entries in the hash's `ld`, if it exists.
local len = redis.call('STRLEN', KEYS[1])
local max = tonumber(ARGV[1])
if len <= max then
  return 0
end
local keep = math.floor(max * 3 / 4)
local tail = redis.call('GETRANGE', KEYS[1], len - keep, -1)
local cut = string.find(tail, '\n', 1, true) or #tail
local head = redis.call('GETRANGE', KEYS[1], 0, len - keep - 1) .. string.sub(tail, 1, cut)
local _, dropped = string.gsub(head, '\n', '')
local ttl = redis.call('PTTL', KEYS[1])
redis.call('SET', KEYS[1], string.sub(tail, cut + 1))
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'ld', dropped)
end
return dropped
