-- Write one hash tag's dead letters, idempotently by stream position, and trim what retention ends.
-- KEYS: entries hash, pending zset, written zset, counts hash, replayed hash: one hash tag (a tenant's, or
--       {_unattributed} for records that name no valid tenant), so the call runs unchanged on Redis Cluster.
-- ARGV: now_ms, ttl_s, then (entry id "<shard>/<seq>", reason, msgpack entry)*.
-- Returns the number of entries new to this tag (a re-read record writes nothing and counts nothing).
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local new = 0
for i = 3, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', KEYS[2], now, ARGV[i])
    redis.call('ZADD', KEYS[3], now, ARGV[i])
    redis.call('HINCRBY', KEYS[4], ARGV[i + 1], 1)
    new = new + 1
  end
end
-- Retention: entries written more than ttl ago leave the hash and both sets (at most 1000 per call; every
-- write trims, and the keys themselves expire ttl after the tag's newest dead letter).
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - ttl * 1000, 'LIMIT', 0, 1000)
for j = 1, #old do
  redis.call('HDEL', KEYS[1], old[j])
  redis.call('ZREM', KEYS[2], old[j])
  redis.call('ZREM', KEYS[3], old[j])
end
for k = 1, #KEYS do redis.call('EXPIRE', KEYS[k], ttl) end
return new
