-- Claims due timers: each due member's score moves to now + lease, so if this replica dies
-- while handling it, another replica fires it again after the lease. Returns the claimed
-- members followed by the earliest remaining score (or '' when the set is empty).
-- KEYS[1] = timers zset; ARGV = now, lease_ms, max batch.
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), member)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
due[#due + 1] = first[2] or ''
return due
