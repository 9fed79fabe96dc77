-- KEYS: 1 agent, 2 due, 3 rev, 4 agents set, 5 notification backlog,
--       6 history, 7 history floor
-- ARGV: 1 id, 2 now ms, 3 presented token hash, 4 token required,
--       5 changes channel, 6 revision floor, 7 history cap, 8 caller's owner key
-- Returns {'OK', message}, {'NONE'} when unknown, or {error code}.
local key, id = KEYS[1], ARGV[1]
keep_history(KEYS[6], KEYS[7], ARGV[7])
if redis.call('EXISTS', key) == 0 then
  return { 'NONE' }
end
local refused = authorize(key, ARGV[3], ARGV[4], ARGV[8])
if refused then
  return { refused }
end
local msg = emit(KEYS[3], ARGV[5], key, id, 'DEREGISTERED', '0', tonumber(ARGV[2]), tonumber(ARGV[6]))
redis.call('DEL', key, KEYS[5])
redis.call('ZREM', KEYS[2], id)
redis.call('SREM', KEYS[4], id)
return { 'OK', msg }
