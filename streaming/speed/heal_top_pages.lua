-- Heal one tenant's top pages of one hour from the warehouse, compare-and-set per path.
-- KEYS[1]: tally:{tenant}:top:h:<hour>, KEYS[2]: tally:{tenant}:top:d:<day> (one hash tag).
-- ARGV: ttl_h, ttl_d, then (path, expected_old, new)*. A path whose views moved since they were read (a
-- late page view applied meanwhile) is left alone; the day moves by the hour's difference.
-- Returns one {'healed'|'skipped', old} per path.
local out = {}
for i = 3, #ARGV, 3 do
  local path, expected, new = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local old = tonumber(redis.call('ZSCORE', KEYS[1], path) or '0')
  if old ~= expected then
    out[#out + 1] = {'skipped', old}
  else
    if new == 0 then redis.call('ZREM', KEYS[1], path) else redis.call('ZADD', KEYS[1], new, path) end
    if tonumber(redis.call('ZINCRBY', KEYS[2], new - old, path)) <= 0 then redis.call('ZREM', KEYS[2], path) end
    out[#out + 1] = {'healed', old}
  end
end
for k, ttl in ipairs({ARGV[1], ARGV[2]}) do
  if redis.call('EXISTS', KEYS[k]) == 1 and redis.call('TTL', KEYS[k]) == -1 then
    redis.call('EXPIRE', KEYS[k], tonumber(ttl))
  end
end
return out
