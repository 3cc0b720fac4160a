-- Heal one tenant's live membership and state of one segment rule from the warehouse's hits.
-- KEYS[1]: tally:{tenant}:seg:<rule>; the state hashes tally:{tenant}:segst:<rule>:<bucket> share its tag.
-- ARGV: prefix "tally:{tenant}:", rule name, ttl_d, state ttl_s, then per visitor
--   (anonymous_id, score or 0, base bucket, expected "bucket:state" or "", target bucket, new state or "").
-- The membership score only rises (ZADD GT): a newer membership the consumer wrote is never lowered.
-- The state is a compare-and-set: it is written only if the visitor's newest state around the base bucket
-- (base + 1, base, base - 1, as apply.lua looks) is still the one healing read.
-- Returns {memberships raised, states written, states skipped}.
local pre, name = ARGV[1], ARGV[2]
local ttl_d, ttl_state = tonumber(ARGV[3]), tonumber(ARGV[4])
local seg = pre .. 'seg:' .. name
local function state_key(b) return pre .. 'segst:' .. name .. ':' .. b end
local raised, written, skipped = 0, 0, 0
for i = 5, #ARGV, 6 do
  local anon, score = ARGV[i], tonumber(ARGV[i + 1])
  if score > 0 then raised = raised + redis.call('ZADD', seg, 'GT', 'CH', score, anon) end
  local state = ARGV[i + 5]
  if state ~= '' then
    local base, current = tonumber(ARGV[i + 2]), ''
    for _, b in ipairs({base + 1, base, base - 1}) do
      local v = redis.call('HGET', state_key(string.format('%d', b)), anon)
      if v then current = string.format('%d', b) .. ':' .. v; break end
    end
    if current == ARGV[i + 3] then
      local key = state_key(ARGV[i + 4])
      redis.call('HSET', key, anon, state)
      redis.call('EXPIRE', key, ttl_state)
      written = written + 1
    else
      skipped = skipped + 1
    end
  end
end
if redis.call('EXISTS', seg) == 1 and redis.call('TTL', seg) == -1 then redis.call('EXPIRE', seg, ttl_d) end
return {raised, written, skipped}
