-- Remove a subject's dead letters in a deletion (streaming/privacy/deadletters.py).
-- KEYS: entries hash, pending zset, written zset (one hash tag). ARGV: entry ids. Returns the entries removed.
local n = 0
for i = 1, #ARGV do
  n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
end
return n
