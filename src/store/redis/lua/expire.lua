-- The reaper's pass; every replica runs it, each transition happens once.
-- KEYS: 1 due, 2 rev, 3 agents set, 4 clock, 5 shift, 6 history,
--       7 history floor
-- ARGV: 1 now ms, 2 removal grace ms, 3 most transitions per pass,
--       4 agent key prefix, 5 backlog key prefix, 6 changes channel,
--       7 fencing threshold ms, 8 revision floor, 9 history cap
-- Returns {overdue, expired, next due ms or -1, shifted ms}.
local now, grace, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local floor = tonumber(ARGV[8])
keep_history(KEYS[6], KEYS[7], ARGV[9])

-- Outage fencing: the clock is the last time a reaper pass ran. A longer
-- silence means heartbeats could not be recorded (store unreachable, or no
-- replica running): move every deadline back by its length first.
local last = tonumber(redis.call('GET', KEYS[4]) or '0')
local shifted = 0
if last > 0 and now - last > tonumber(ARGV[7]) then
  shifted = now - last
  redis.call('INCRBY', KEYS[5], int(shifted))
end
if now > last then
  redis.call('SET', KEYS[4], int(now))
end
local shift = shift_of(KEYS[5])

local overdue, expired = 0, 0
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - shift, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #due, 2 do
  local id, score = due[i], tonumber(due[i + 1])
  local key = ARGV[4] .. id
  if redis.call('EXISTS', key) == 0 then
    -- Dropped by its safety-net expiry while no replica ran: tidy up.
    redis.call('ZREM', KEYS[1], id)
    redis.call('SREM', KEYS[3], id)
    redis.call('DEL', ARGV[5] .. id)
  elseif redis.call('HGET', key, 'od') == '1' then
    emit(KEYS[2], ARGV[6], key, id, 'EXPIRED', '0', now, floor)
    redis.call('DEL', key, ARGV[5] .. id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('SREM', KEYS[3], id)
    expired = expired + 1
  else
    local st = redis.call('HGET', key, 'st')
    redis.call('HSET', key, 'od', '1', 'st', '2')
    redis.call('ZADD', KEYS[1], score + grace, id)
    if st ~= '2' then
      emit(KEYS[2], ARGV[6], key, id, 'STATUS_CHANGED', st, now, floor)
    end
    overdue = overdue + 1
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if #first == 2 then
  next_due = tonumber(first[2]) + shift
end
return { overdue, expired, int(next_due), int(shifted) }
