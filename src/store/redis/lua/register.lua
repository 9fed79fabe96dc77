-- KEYS: 1 agent, 2 due, 3 rev, 4 agents set, 5 shift, 6 history,
--       7 history floor
-- ARGV: 1 id, 2 now ms, 3 mode ('new' = fresh id, 'id' = client-chosen id),
--       4 reg, 5 tel ('' = none given), 6 tst, 7 ttl s, 8 presented token
--       hash ('' = none), 9 token required ('1'/'0'), 10 fresh token hash,
--       11 changes channel, 12 safety-net expiry ms, 13 telemetry blob of
--       an agent that never reported any, 14 revision floor, 15 history cap,
--       16 caller's owner key ('' = anonymous: the agent has no owner identity)
--       17 active check's rule ('' = none; see `hc` in common.lua)
-- Returns {'OK', kind, message} or {error code}.
local key, id, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local tel, tst = ARGV[5], ARGV[6]
local kind
local prev_reg = ''
keep_history(KEYS[6], KEYS[7], ARGV[15])
if redis.call('EXISTS', key) == 1 then
  if ARGV[3] == 'new' then
    return { 'CONFLICT' }
  end
  local refused = authorize(key, ARGV[8], ARGV[9], ARGV[16])
  if refused then
    return { refused }
  end
  local old = redis.call('HMGET', key, 'tel', 'tst', 'reg')
  if tel == '' then
    tel, tst = old[1], old[2]
  end
  prev_reg = old[3]
  redis.call('HSET', key, 'reg', ARGV[4], 'tel', tel, 'tst', tst, 'st', tst,
    'od', '0', 'ls', ARGV[2], 'ttl', ARGV[7])
  kind = 'UPDATED'
else
  local tok = ARGV[8]
  if tok == '' then
    tok = ARGV[10]
  end
  if tel == '' then
    tel, tst = ARGV[13], '1'
  end
  redis.call('HSET', key, 'reg', ARGV[4], 'tel', tel, 'tst', tst, 'st', tst,
    'od', '0', 'ls', ARGV[2], 'ttl', ARGV[7], 'ra', int(math.floor(now / 1000)),
    'rev', '0', 'tok', tok, 'nid', '0')
  if ARGV[16] ~= '' then
    redis.call('HSET', key, 'own', ARGV[16])
  end
  redis.call('SADD', KEYS[4], id)
  kind = 'REGISTERED'
end
-- A (re-)registration starts its check afresh: passing, no probe history.
redis.call('HDEL', key, 'hx', 'hf', 'hp', 'hs', 'ho')
redis.call('HSET', key, 'hc', ARGV[17] or '')
local ttl_ms = tonumber(ARGV[7]) * 1000
redis.call('ZADD', KEYS[2], now + ttl_ms - shift_of(KEYS[5]), id)
redis.call('PEXPIRE', key, ttl_ms + tonumber(ARGV[12]))
return { 'OK', kind, emit(KEYS[3], ARGV[11], key, id, kind, '0', now, tonumber(ARGV[14]), prev_reg) }
