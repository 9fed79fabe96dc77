-- KEYS: 1 agent, 2 notification backlog
-- ARGV: 1 id, 2 now ms, 3 notification blob, 4 agent's notification
--       channel, 5 backlog length
-- Returns {'OK', message, receivers} or {'NOT_FOUND'}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'NOT_FOUND' }
end
local nid = redis.call('HINCRBY', KEYS[1], 'nid', 1)
local msg = cmsgpack.pack({ int(nid), ARGV[1], ARGV[2], ARGV[3] })
redis.call('RPUSH', KEYS[2], msg)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
local receivers = redis.call(PUBLISH, ARGV[4], msg)
return { 'OK', msg, receivers }
