-- KEYS: 1 agent, 2 due, 3 rev, 4 shift, 5 history, 6 history floor
-- ARGV: 1 id, 2 now ms, 3 tel ('' = none given), 4 tst, 5 presented token
--       hash, 6 token required, 7 changes channel, 8 safety-net expiry ms,
--       9 revision floor, 10 history cap, 11 caller's owner key ('' = anonymous)
-- Returns {'OK', revision of the last change, status, last seen ms, ttl s}
-- or {error code}. The changes are published, not returned: the caller
-- needs only what its answer carries.
local key, id, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
keep_history(KEYS[5], KEYS[6], ARGV[10])
-- One read for the whole check: every record has a ttl.
local cur = redis.call('HMGET', key, 'tel', 'tst', 'st', 'ls', 'ttl', 'hx', 'tok', 'own')
if not cur[5] then
  return { 'NOT_FOUND' }
end
local refused = owns(cur[7], cur[8], ARGV[5], ARGV[6], ARGV[11])
if refused then
  return { refused }
end
local tel, tst = cur[1], cur[2]
local changed = false
if ARGV[3] ~= '' then
  changed = ARGV[3] ~= cur[1]
  tel, tst = ARGV[3], ARGV[4]
end
local ls = math.max(now, tonumber(cur[4]))
-- A failing active check keeps the agent UNHEALTHY whatever its telemetry.
local st = tst
if cur[6] == '1' then
  st = '2'
end
redis.call('HSET', key, 'tel', tel, 'tst', tst, 'st', st, 'od', '0', 'ls', int(ls))
local ttl_ms = tonumber(cur[5]) * 1000
redis.call('ZADD', KEYS[2], ls + ttl_ms - shift_of(KEYS[4]), id)
redis.call('PEXPIRE', key, ttl_ms + tonumber(ARGV[8]))
local floor = tonumber(ARGV[9])
local emitted_any = false
if changed then
  emit(KEYS[3], ARGV[7], key, id, 'UPDATED', '0', now, floor)
  emitted_any = true
end
if st ~= cur[3] then
  emit(KEYS[3], ARGV[7], key, id, 'STATUS_CHANGED', cur[3], now, floor)
  emitted_any = true
end
if not emitted_any then
  emit(KEYS[3], ARGV[7], key, id, 'TOUCHED', '0', now, floor)
end
return { 'OK', int(emitted.rev), st, int(ls), cur[5] }
