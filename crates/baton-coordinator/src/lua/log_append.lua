-- Appends entries to a job's decision log. KEYS[1] = the job hash, KEYS[2] = its log (same
-- hash slot). ARGV[1] = most entries kept, ARGV[2] = TTL when the job hash has none (ms),
-- ARGV[3..] = the entries, in order. The log expires with the job: it takes the hash's TTL.
local n = #ARGV - 2
if n <= 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], unpack(ARGV, 3))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[1]), -1)
-- Counted in the hash only while it exists: HINCRBY would create a hash without a TTL.
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('HINCRBY', KEYS[1], 'lg', n)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return n
