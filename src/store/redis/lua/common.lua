-- Shared by every mutation script (prepended by scripts.rs).
--
-- `PUBLISH` (defined before this file by topology.rs) is the publishing
-- command: 'PUBLISH', or 'SPUBLISH' (sharded pub/sub) on a Redis Cluster.
--
-- An agent record is a hash:
--   reg  registration blob (encoded by the registry, opaque here)
--   tel  telemetry blob (canonical text, opaque here)
--   tst  status its telemetry gives (1 HEALTHY, 2 UNHEALTHY, 3 DEGRADED)
--   st   current status          od   1 while overdue (awaiting removal)
--   ls   last seen (ms)          ttl  heartbeat timeout (s)
--   ra   registered at (s)       rev  revision of its last visible change
--   tok  token hash              nid  last notification id
--   own  owner key of the identity that registered it (absent: none)
--   nb   bytes held in its notification backlog
--   hc   active check's rule, 'failures:successes:deregister_after_ms'
--        ('' or absent = no check); its probe state (absent = default):
--   hx   1 while the check fails  hf   consecutive failures
--   hp   consecutive passes       hs   failing since (ms, '' = not failing)
--   ho   what the last probe found
--
-- The deadline zset stores "deadline - shift": `shift` (the SHIFT key) grows
-- by D when heartbeats could not be recorded for D ms, which moves every
-- deadline back at once (outage fencing) without touching each member.

local function int(x)
  return string.format('%d', x)
end

local function shift_of(shift_key)
  return tonumber(redis.call('GET', shift_key) or '0')
end

-- Ownership check (BEHAVIOUR.md sections 3 and 9) of a record whose token
-- hash is `tok` and owner key `own`: '' = no token presented,
-- caller = the caller identity's owner key ('' = anonymous). Without a
-- token, the owning identity is let in and any other identity refused.
local function owns(tok, own, presented, required, caller)
  if presented == '' then
    if caller ~= '' and own then
      if own == caller then
        return nil
      end
      return 'PERMISSION_DENIED'
    end
    if required == '1' then
      return 'UNAUTHENTICATED'
    end
    return nil
  end
  if tok ~= presented then
    return 'PERMISSION_DENIED'
  end
  return nil
end

-- `owns` with the record's token hash and owner read here.
local function authorize(key, presented, required, caller)
  local f = redis.call('HMGET', key, 'tok', 'own')
  return owns(f[1], f[2], presented, required, caller)
end

-- The change history (a capped stream; BEHAVIOUR.md section 11), set by a
-- script with `keep_history` before it emits. Every change above the floor
-- key's revision is in the stream.
local history = { key = nil, floor = nil, cap = 0 }

local function keep_history(key, floor_key, cap)
  history.key, history.floor, history.cap = key, floor_key, tonumber(cap)
end

-- Appends a change to the history, trimming the oldest entries (and
-- raising the floor to the newest one trimmed) beyond the cap.
local function record(rev, msg, prev_reg)
  if history.key == nil or history.cap <= 0 then
    return
  end
  -- The first change ever recorded: everything above its predecessor is
  -- in the history from now on.
  redis.call('SET', history.floor, int(rev - 1), 'NX')
  local top = redis.call('XREVRANGE', history.key, '+', '-', 'COUNT', 1)
  if #top == 1 and tonumber(string.match(top[1][1], '^(%d+)')) >= rev then
    return
  end
  local len = redis.call('XLEN', history.key)
  if len >= history.cap then
    local gone = redis.call('XRANGE', history.key, '-', '+', 'COUNT', len - history.cap + 1)
    redis.call('SET', history.floor, string.match(gone[#gone][1], '^(%d+)'))
    redis.call('XTRIM', history.key, 'MAXLEN', history.cap - 1)
  end
  redis.call('XADD', history.key, int(rev) .. '-0', 'm', msg, 'p', prev_reg or '')
end

-- Records a change of the agent at `key`: takes the next revision, stamps it
-- on the record unless the change is a keep-alive, publishes the change,
-- appends it to the history (`prev_reg`: the registration a re-registration
-- replaced) and returns the published message (its revision is left in
-- `emitted.rev`).
--
-- `floor` is the highest revision the calling replica has seen. Should the
-- counter be behind it (Redis restarted from an older snapshot), or missing
-- (a new or wiped store: seeded from the clock, ms * 1000, exact below 2^53),
-- it jumps ahead, so revisions never go backwards for any client.
local emitted = { rev = 0 }

local function emit(rev_key, channel, key, id, kind, prev, now, floor, prev_reg)
  local rev = redis.call('INCR', rev_key)
  if rev <= floor then
    rev = floor + 1
    redis.call('SET', rev_key, int(rev))
  elseif rev == 1 then
    rev = now * 1000 + 1
    redis.call('SET', rev_key, int(rev))
  end
  if kind ~= 'TOUCHED' then
    redis.call('HSET', key, 'rev', rev)
  end
  local f = redis.call('HMGET', key, 'reg', 'tel', 'st', 'od', 'ls', 'ttl', 'ra', 'rev',
    'hx', 'hf', 'hp', 'hs', 'ho')
  local msg = cmsgpack.pack({ int(rev), kind, prev, int(now), id,
    f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8],
    f[9] or '', f[10] or '', f[11] or '', f[12] or '', f[13] or '' })
  redis.call(PUBLISH, channel, msg)
  if kind ~= 'TOUCHED' then
    record(rev, msg, prev_reg)
  end
  emitted.rev = rev
  return msg
end
