-- Every agent at one revision, for a replica (re)building its view.
-- KEYS: 1 rev, 2 agents set
-- ARGV: 1 agent key prefix, 2 now ms, 3 revision floor
-- Returns {revision, record message...} (records packed as changes of kind
-- SNAPSHOT).
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
local out = { rev }
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local f = redis.call('HMGET', ARGV[1] .. id, 'reg', 'tel', 'st', 'od', 'ls', 'ttl', 'ra', 'rev',
    'hx', 'hf', 'hp', 'hs', 'ho')
  if f[1] then
    table.insert(out, cmsgpack.pack({ rev, 'SNAPSHOT', '0', '0', id,
      f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8],
      f[9] or '', f[10] or '', f[11] or '', f[12] or '', f[13] or '' }))
  end
end
return out
