-- Heal minute counters to batch truth, compare-and-set per cell (streaming/reconcile/heal.py).
-- KEYS[1]: one of the tenant's minute keys, only so Redis Cluster routes the call to the tenant's slot;
--         every key is built from the prefix ARGV[1] and shares its hash tag.
-- ARGV: prefix, ttl_m, ttl_h, ttl_d, then (minute, event_type, expected_old, new)*.
local pre = ARGV[1]
local out = {}
for i = 5, #ARGV, 4 do
  local minute, etype = tonumber(ARGV[i]), ARGV[i + 1]
  local expected_old, new = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local mkey = pre .. 'cnt:m:' .. ARGV[i]
  local old = tonumber(redis.call('HGET', mkey, etype) or '0')
  if old ~= expected_old then
    out[#out + 1] = {'skipped', old}
  else
    local delta = new - old
    if new == 0 then redis.call('HDEL', mkey, etype) else redis.call('HSET', mkey, etype, new) end
    local hkey = pre .. 'cnt:h:' .. math.floor(minute / 60)
    local dkey = pre .. 'cnt:d:' .. math.floor(minute / 1440)
    redis.call('HINCRBY', hkey, etype, delta)
    redis.call('HINCRBY', dkey, etype, delta)
    for _, kt in ipairs({{mkey, ARGV[2]}, {hkey, ARGV[3]}, {dkey, ARGV[4]}}) do
      if redis.call('EXISTS', kt[1]) == 1 and redis.call('TTL', kt[1]) == -1 then
        redis.call('EXPIRE', kt[1], tonumber(kt[2]))
      end
    end
    out[#out + 1] = {'healed', old}
  end
end
return out
