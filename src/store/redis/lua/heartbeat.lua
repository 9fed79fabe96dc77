-- KEYS: 1 agent, 2 due, 3 rev, 4 shift, 5 history, 6 history floor
-- ARGV: 1 id, 2 now ms, 3 tel ('' = none given), 4 tst, 5 presented token
--       hash, 6 token required, 7 changes channel, 8 safety-net expiry ms,
--       9 revision floor, 10 history cap, 11 caller's owner key ('' = anonymous)
-- Returns {'OK', message...} (one message per change) or {error code}.
local key, id, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
keep_history(KEYS[5], KEYS[6], ARGV[10])
if redis.call('EXISTS', key) == 0 then
  return { 'NOT_FOUND' }
end
local refused = authorize(key, ARGV[5], ARGV[6], ARGV[11])
if refused then
  return { refused }
end
local cur = redis.call('HMGET', key, 'tel', 'tst', 'st', 'ls', 'ttl')
local tel, tst = cur[1], cur[2]
local changed = false
if ARGV[3] ~= '' then
  changed = ARGV[3] ~= cur[1]
  tel, tst = ARGV[3], ARGV[4]
end
local ls = math.max(now, tonumber(cur[4]))
-- A failing active check keeps the agent UNHEALTHY whatever its telemetry.
local st = tst
if redis.call('HGET', key, 'hx') == '1' then
  st = '2'
end
redis.call('HSET', key, 'tel', tel, 'tst', tst, 'st', st, 'od', '0', 'ls', int(ls))
local ttl_ms = tonumber(cur[5]) * 1000
redis.call('ZADD', KEYS[2], ls + ttl_ms - shift_of(KEYS[4]), id)
redis.call('PEXPIRE', key, ttl_ms + tonumber(ARGV[8]))
local out = { 'OK' }
if changed then
  table.insert(out, emit(KEYS[3], ARGV[7], key, id, 'UPDATED', '0', now, tonumber(ARGV[9])))
end
if st ~= cur[3] then
  table.insert(out, emit(KEYS[3], ARGV[7], key, id, 'STATUS_CHANGED', cur[3], now, tonumber(ARGV[9])))
end
if #out == 1 then
  table.insert(out, emit(KEYS[3], ARGV[7], key, id, 'TOUCHED', '0', now, tonumber(ARGV[9])))
end
return out
