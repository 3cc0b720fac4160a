-- Heal one tenant's hourly unique-visitor HyperLogLog from the warehouse's anonymous ids.
-- KEYS[1]: tally:{tenant}:uv:h:<hour>. ARGV[1]: ttl_s (TALLY_SPEED_TTL_DAY_S), ARGV[2..]: anonymous ids.
-- PFADD is a union: it never removes what the consumer added and never counts an id twice, so healing
-- while the consumer writes needs no compare-and-set. Returns {changed (0|1), estimate after}.
local changed = redis.call('PFADD', KEYS[1], unpack(ARGV, 2))
if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
return {changed, redis.call('PFCOUNT', KEYS[1])}
