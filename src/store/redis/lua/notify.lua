-- KEYS: 1 agent, 2 notification backlog
-- ARGV: 1 id, 2 now ms, 3 notification blob, 4 agent's notification
--       channel, 5 backlog length, 6 backlog bytes
-- Returns {'OK', message, receivers} or {'NOT_FOUND'}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'NOT_FOUND' }
end
local nid = redis.call('HINCRBY', KEYS[1], 'nid', 1)
local msg = cmsgpack.pack({ int(nid), ARGV[1], ARGV[2], ARGV[3] })
local len = redis.call('RPUSH', KEYS[2], msg)
local held = redis.call('HINCRBY', KEYS[1], 'nb', #msg)
-- Oldest first, until both bounds hold (the newest always stays).
while len > 1 and (len > tonumber(ARGV[5]) or held > tonumber(ARGV[6])) do
  held = redis.call('HINCRBY', KEYS[1], 'nb', -#redis.call('LPOP', KEYS[2]))
  len = len - 1
end
local receivers = redis.call(PUBLISH, ARGV[4], msg)
return { 'OK', msg, receivers }
