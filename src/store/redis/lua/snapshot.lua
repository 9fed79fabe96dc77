-- Every agent at one revision, for a replica (re)building its view.
-- KEYS: 1 rev, 2 agents set
-- ARGV: 1 agent key prefix, 2 now ms, 3 revision floor
-- Returns {revision, then 14 fields per agent: id, reg, tel, st, od, ls,
-- ttl, ra, rev, hx, hf, hp, hs, ho} as one flat array: Redis encodes it as
-- it is (packing each record in Lua cost about as much as reading it).
local rev = redis.call('GET', KEYS[1])
if not rev then
  -- Seed an empty store's revision from the clock (see emit in common.lua).
  rev = int(tonumber(ARGV[2]) * 1000)
  redis.call('SET', KEYS[1], rev)
end
if tonumber(rev) < tonumber(ARGV[3]) then
  -- Restored from an older snapshot: never let revisions go backwards.
  rev = ARGV[3]
  redis.call('SET', KEYS[1], rev)
end
local out, n = { rev }, 1
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local f = redis.call('HMGET', ARGV[1] .. id, 'reg', 'tel', 'st', 'od', 'ls', 'ttl', 'ra', 'rev',
    'hx', 'hf', 'hp', 'hs', 'ho')
  if f[1] then
    out[n + 1] = id
    for i = 1, 13 do
      out[n + 1 + i] = f[i]
    end
    n = n + 14
  end
end
return out
