-- A shard's position floor on one Redis node: "this node holds every write of this shard's batches up
-- to seq" (streaming/speed/positions.py says why that holds and what it is for).
-- KEYS[1]: tally:{_pos<n>}:pos:<group>:<shard>  (hash: token, seq), a tag that lives on this node.
-- ARGV[1] = 'read': returns {run_id, token or false, seq or false}.
-- ARGV[1] = 'write', ARGV[2] = the run id the caller verified, ARGV[3] = lease token, ARGV[4] = seq,
--   ARGV[5] = ttl_s: returns {'incarnation', run_id} when the node is not the one verified (it restarted,
--   or a replica took over: it may hold less than it acknowledged), {'fenced', token} when a newer lease
--   owner wrote the floor, else {'ok'}.
local info = redis.call('INFO', 'server')
if ARGV[1] == 'read' then
  local m = redis.call('HMGET', KEYS[1], 'token', 'seq')
  return {string.match(info, 'run_id:(%x+)'), m[1] or false, m[2] or false}
end
if not string.find(info, 'run_id:' .. ARGV[2], 1, true) then
  return {'incarnation', string.match(info, 'run_id:(%x+)')}
end
local stored = tonumber(redis.call('HGET', KEYS[1], 'token'))
if stored and stored > tonumber(ARGV[3]) then
  return {'fenced', stored}
end
redis.call('HSET', KEYS[1], 'token', ARGV[3], 'seq', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {'ok'}
