-- Mark re-fed dead letters replayed (streaming/speed/deadletters.py).
-- KEYS: pending, replayed counts (one tag). ARGV: (id, reason)*. Only pending entries move (idempotent).
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1)
    n = n + 1
  end
end
return n
