-- One probe result of an agent's active check (BEHAVIOUR.md section 10),
-- applied by the same rule as `HealthCheck::step` / `Agent::probed` in
-- src/domain: hysteresis on consecutive results, a pass renews liveness as a
-- heartbeat does, continuous failure for deregister_after removes the agent.
-- KEYS: 1 agent, 2 due, 3 rev, 4 agents set, 5 notification backlog,
--       6 shift, 7 history, 8 history floor
-- ARGV: 1 id, 2 now ms, 3 '1' passed / '0' failed, 4 output,
--       5 changes channel, 6 safety-net expiry ms, 7 revision floor,
--       8 history cap
-- Returns {'OK', kind, message}, or {'NONE'} when the agent is gone or has
-- no check (a result that raced a deregistration or re-registration).
local key, id, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local floor = tonumber(ARGV[7])
keep_history(KEYS[7], KEYS[8], ARGV[8])
if redis.call('EXISTS', key) == 0 then
  return { 'NONE' }
end
local cur = redis.call('HMGET', key, 'hc', 'hx', 'hf', 'hp', 'hs', 'st', 'tst', 'od', 'ls', 'ttl')
local need_f, need_s, dereg = string.match(cur[1] or '', '^(%d+):(%d+):(%d+)$')
if not need_f then
  return { 'NONE' }
end
need_f, need_s, dereg = tonumber(need_f), tonumber(need_s), tonumber(dereg)
local failing = cur[2] == '1'
local hf, hp = tonumber(cur[3] or '0') or 0, tonumber(cur[4] or '0') or 0
local since = cur[5] or ''
local st, od = cur[6], cur[8] == '1'
local remove = false
if ARGV[3] == '1' then
  hf, hp, since = 0, hp + 1, ''
  if failing and hp >= need_s then
    failing = false
  end
  -- Liveness, as a heartbeat: fresh deadline, an overdue agent revived.
  local ls = math.max(now, tonumber(cur[9]))
  local ttl_ms = tonumber(cur[10]) * 1000
  od = false
  redis.call('HSET', key, 'od', '0', 'ls', int(ls))
  redis.call('ZADD', KEYS[2], ls + ttl_ms - shift_of(KEYS[6]), id)
  redis.call('PEXPIRE', key, ttl_ms + tonumber(ARGV[6]))
else
  hf, hp = hf + 1, 0
  if since == '' then
    since = int(now)
  end
  if hf >= need_f then
    failing = true
  end
  remove = dereg > 0 and now - tonumber(since) >= dereg
end
local new_st = cur[7]
if od or failing then
  new_st = '2'
end
local hx = '0'
if failing then
  hx = '1'
end
redis.call('HSET', key, 'hx', hx, 'hf', int(hf), 'hp', int(hp), 'hs', since, 'ho', ARGV[4], 'st', new_st)
if remove then
  local msg = emit(KEYS[3], ARGV[5], key, id, 'EXPIRED', '0', now, floor)
  redis.call('DEL', key, KEYS[5])
  redis.call('ZREM', KEYS[2], id)
  redis.call('SREM', KEYS[4], id)
  return { 'OK', 'EXPIRED', msg }
end
if new_st ~= st then
  return { 'OK', 'STATUS_CHANGED', emit(KEYS[3], ARGV[5], key, id, 'STATUS_CHANGED', st, now, floor) }
end
return { 'OK', 'TOUCHED', emit(KEYS[3], ARGV[5], key, id, 'TOUCHED', '0', now, floor) }
