-- The change history after a revision (BEHAVIOUR.md section 11).
-- KEYS: 1 history, 2 history floor, 3 rev
-- ARGV: 1 after (exclusive), 2 up to (inclusive), 3 most entries
-- Returns {'OK', msg1, prev1, msg2, prev2, ...} in revision order, or
-- {'COMPACTED', oldest revision a watch can resume after}.
local after, upto, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local floor = redis.call('GET', KEYS[2])
if not floor then
  -- No change was recorded yet: only the present can be resumed from. A
  -- store without even a revision was wiped: nothing can be.
  local rev = redis.call('GET', KEYS[3])
  if rev and after >= tonumber(rev) then
    return { 'OK' }
  end
  return { 'COMPACTED', rev or '0' }
end
floor = tonumber(floor)
if after < floor then
  return { 'COMPACTED', int(floor) }
end
local out = { 'OK' }
if upto <= after then
  return out
end
local entries = redis.call('XRANGE', KEYS[1], int(after + 1) .. '-0', int(upto) .. '-0',
  'COUNT', limit)
for _, entry in ipairs(entries) do
  local f = entry[2]
  local m, p = '', ''
  for i = 1, #f, 2 do
    if f[i] == 'm' then
      m = f[i + 1]
    elseif f[i] == 'p' then
      p = f[i + 1]
    end
  end
  table.insert(out, m)
  table.insert(out, p)
end
return out
