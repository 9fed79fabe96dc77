-- KEYS: 1 agent, 2 notification backlog
-- ARGV: 1 presented token hash, 2 token required, 3 resume after id (0 = all),
--       4 caller's owner key ('' = anonymous)
-- Returns {'OK', message...} or {error code}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'NOT_FOUND' }
end
local refused = authorize(KEYS[1], ARGV[1], ARGV[2], ARGV[4])
if refused then
  return { refused }
end
if tonumber(ARGV[3]) > tonumber(redis.call('HGET', KEYS[1], 'nid') or '0') then
  return { 'BAD_AFTER' }
end
local out = { 'OK' }
for _, msg in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  table.insert(out, msg)
end
return out
