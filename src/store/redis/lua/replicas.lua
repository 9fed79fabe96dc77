-- A replica announces itself to the probers' membership (BEHAVIOUR.md
-- section 10) and reads it back. Members not seen for `stale` ms are gone.
-- KEYS: 1 replicas zset (member = replica id, score = last seen ms)
-- ARGV: 1 replica id, 2 now ms, 3 stale ms, 4 '1' = leave instead
-- Returns the live replica ids.
local now = tonumber(ARGV[2])
if ARGV[4] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
