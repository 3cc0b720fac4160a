-- Apply one tenant's pre-aggregated share of one batch, atomically, exactly once.
-- KEYS[1]: the applied marker  tally:{tenant}:applied:<group>:<shard>  (hash: token, seq)
-- ARGV[1]: msgpack payload built by streaming/speed/store.py (see TenantBatch.payload for the arrays).
-- ARGV[2..]: the batch's event_ids, 16 bytes each, one argument per event (in the payload's order).
-- Every other key is built from payload.pre = "tally:{tenant}:", so all keys are in KEYS[1]'s slot.
-- Returns {"incarnation", 0} (not the verified node) | {"fenced", stored_token} | {"skipped", n_events, 0} | {"applied", n_applied, n_skipped}
--       | {"straddle", marker_seq} | {"seen", {indices}} | {"suppress", version}: the caller rebuilds its
--         aggregates (without applied or seen events, or with the newer suppression list) and calls again.
local p = cmsgpack.unpack(ARGV[1])
local pre = p.pre
-- 0. This node must be the Redis the caller verified (payload.rid, its run id; streaming/speed/positions.py):
-- a restarted node or a promoted replica may have lost writes it acknowledged, and applying on top would
-- move this marker past them for good. Nothing is written; the caller checks the node's position floor.
if p.rid and not string.find(redis.call('INFO', 'server'), 'run_id:' .. p.rid, 1, true) then
  return {'incarnation', 0}
end
local function int(x) return string.format('%d', x) end
-- Kinesis sequence numbers are decimal strings of up to 56 digits: compare by length, then text.
local function seq_gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

local marker = KEYS[1]
local m = redis.call('HMGET', marker, 'token', 'seq')
local stored_token = tonumber(m[1])
if stored_token and stored_token > p.token then
  return {'fenced', m[1]}
end
local n = #ARGV - 1
local last_seq = p.last
local mseq = m[2]
if mseq and not seq_gt(last_seq, mseq) then
  if not stored_token or stored_token < p.token then redis.call('HSET', marker, 'token', p.token) end
  return {'skipped', n, 0}
end
-- 1. A re-read after a crash may straddle the marker: the caller drops what it covers and calls again.
if mseq and not seq_gt(p.first, mseq) then
  return {'straddle', mseq}
end

-- The suppression list (streaming/privacy/suppression.py) the caller aggregated with must be the current
-- one: otherwise write nothing and say which version to reload (no event counts against a stale list).
local sv = tonumber(redis.call('GET', pre .. 'suppress:ver') or '0')
if sv ~= p.sv then
  return {'suppress', sv}
end

-- 2. event_ids seen inside the dedup horizon: sets per time bucket of first sighting (server clock);
-- the horizon is `buckets` buckets long, so the current bucket and `buckets` before it cover it.
local now = redis.call('TIME')
local now_s = tonumber(now[1])
local L = p.bucket_s
local cur_bucket = math.floor(now_s / L)
local CHUNK = 1000
local skip = {}
for k = 0, p.buckets do
  local key = pre .. 'seen:' .. int(cur_bucket - k)
  if redis.call('EXISTS', key) == 1 then
    for c0 = 1, n, CHUNK do
      local c1 = math.min(n, c0 + CHUNK - 1)
      local r = redis.call('SMISMEMBER', key, unpack(ARGV, c0 + 1, c1 + 1))
      for j = 1, #r do
        if r[j] == 1 then skip[c0 + j - 1] = true end
      end
    end
  end
end
-- The caller's aggregates must leave out exactly the events seen before; if not, name them and stop.
local seen_list = {}
for i = 1, n do if skip[i] then seen_list[#seen_list + 1] = i end end
local excluded = p.excluded
local same = #seen_list == #excluded
if same then
  for j = 1, #seen_list do if seen_list[j] ~= excluded[j] then same = false; break end end
end
if not same then
  return {'seen', seen_list}
end
if #seen_list < n then
  local seen_key = pre .. 'seen:' .. int(cur_bucket)
  if #seen_list == 0 then  -- the common case: every id is new, added straight from ARGV
    for c0 = 1, n, CHUNK do redis.call('SADD', seen_key, unpack(ARGV, c0 + 1, math.min(n, c0 + CHUNK - 1) + 1)) end
  else
    local fresh = {}
    for i = 1, n do
      if not skip[i] then fresh[#fresh + 1] = ARGV[i + 1] end
      if #fresh == CHUNK or (i == n and #fresh > 0) then
        redis.call('SADD', seen_key, unpack(fresh))
        fresh = {}
      end
    end
  end
  redis.call('EXPIREAT', seen_key, (cur_bucket + p.buckets + 2) * L)
end
local c, v, pg = p.c, p.v, p.p
local expire = {}

-- 4. Counters: minute cells, rolled up to hours and days.
local hours, days = {}, {}
for i = 1, #c / 3 do
  local n_i = c[3 * i]
  if n_i > 0 then
    local minute, etype = c[3 * i - 2], c[3 * i - 1]
    local key = pre .. 'cnt:m:' .. int(minute)
    redis.call('HINCRBY', key, etype, n_i)
    expire[key] = p.ttl_m
    local hk = int(math.floor(minute / 60))
    local dk = int(math.floor(minute / 1440))
    hours[hk] = hours[hk] or {}
    hours[hk][etype] = (hours[hk][etype] or 0) + n_i
    days[dk] = days[dk] or {}
    days[dk][etype] = (days[dk][etype] or 0) + n_i
  end
end
for hk, by_type in pairs(hours) do
  local key = pre .. 'cnt:h:' .. hk
  for etype, n_i in pairs(by_type) do redis.call('HINCRBY', key, etype, n_i) end
  expire[key] = p.ttl_h
end
for dk, by_type in pairs(days) do
  local key = pre .. 'cnt:d:' .. dk
  for etype, n_i in pairs(by_type) do redis.call('HINCRBY', key, etype, n_i) end
  expire[key] = p.ttl_d
end

-- Events of suppressed subjects received after their suppression started: counted apart, never as events.
local x = p.x
for i = 1, #x / 3 do
  local key = pre .. 'sup:m:' .. int(x[3 * i - 2])
  redis.call('HINCRBY', key, x[3 * i - 1], x[3 * i])
  expire[key] = p.ttl_d
end

-- 5. Unique visitors (HyperLogLog) per hour; a day or any longer range is the union of its hours,
-- merged by PFCOUNT at query time (one PFADD per visitor instead of two on the hot path).
for _, grp in ipairs(v) do
  local key = pre .. 'uv:h:' .. int(grp[1])
  local members = grp[2]
  for c0 = 1, #members, CHUNK do
    redis.call('PFADD', key, unpack(members, c0, math.min(#members, c0 + CHUNK - 1)))
  end
  expire[key] = p.ttl_d
end

-- 6. Top pages per hour and day.
local dp = {}
for i = 1, #pg / 3 do
  local n_i = pg[3 * i]
  if n_i > 0 then
    local hour, path = pg[3 * i - 2], pg[3 * i - 1]
    local key = pre .. 'top:h:' .. int(hour)
    redis.call('ZINCRBY', key, n_i, path)
    expire[key] = p.ttl_h
    local dk = int(math.floor(hour / 24))
    dp[dk] = dp[dk] or {}
    dp[dk][path] = (dp[dk][path] or 0) + n_i
  end
end
for dk, by_path in pairs(dp) do
  local key = pre .. 'top:d:' .. dk
  for path, n_i in pairs(by_path) do redis.call('ZINCRBY', key, n_i, path) end
  expire[key] = p.ttl_d
end

-- 7. Live segment membership. State per (rule, visitor): the newest min_count matching times (epoch ms,
-- ascending, msgpack-encoded: cmsgpack decodes it in C, a text list cost more to parse than the rest), in a
-- hash per rule per window-long bucket (the current and previous bucket hold every live state).
-- Membership: sorted set visitor -> epoch ms until which the visitor stays a member.
-- Entries arrive grouped by (rule, bucket of the newest hit), each with the batch's own state already
-- cut and formatted (see TenantBatch.payload): a visitor with no stored state costs no Lua work
-- beyond passing it on; only a stored state is parsed and merged.
-- Commands with one argument per entry go in chunks of CHUNK entries (Lua's unpack has a limit); a
-- single chunk, the common case, is passed as is rather than copied.
local function hmget_all(key, fields)
  if #fields <= CHUNK then return redis.call('HMGET', key, unpack(fields)) end
  local out = {}
  for c0 = 1, #fields, CHUNK do
    local r = redis.call('HMGET', key, unpack(fields, c0, math.min(#fields, c0 + CHUNK - 1)))
    for j = 1, #r do out[c0 + j - 1] = r[j] end
  end
  return out
end
local function chunked(cmd, key, option, args, width)  -- option: nil or one word put before the entries
  local step = CHUNK * width
  if #args <= step then
    if option then redis.call(cmd, key, option, unpack(args)) else redis.call(cmd, key, unpack(args)) end
    return
  end
  for c0 = 1, #args, step do
    local c1 = math.min(#args, c0 + step - 1)
    if option then redis.call(cmd, key, option, unpack(args, c0, c1)) else redis.call(cmd, key, unpack(args, c0, c1)) end
  end
end
-- A membership that ended more than payload.seg_hist (ms) before this group's bucket began (no later than
-- any of its hits) is no membership at any time a live query may ask about (TALLY_SPEED_SEGMENT_HISTORY_S):
-- it goes, so a set holds the last day's members rather than every visitor of the key's day TTL.
local function add_members(name, bucket, window, zadd_args)
  local seg = pre .. 'seg:' .. name
  chunked('ZADD', seg, 'GT', zadd_args, 2)
  redis.call('ZREMRANGEBYSCORE', seg, '-inf', '(' .. int(bucket * window - p.seg_hist))
  expire[seg] = p.ttl_d
end
for _, grp in ipairs(p.s) do
  local rule = p.rules[grp[1]]
  local bucket, anons, texts, oldest, counts = grp[2], grp[3], grp[4], grp[5], grp[6]  -- texts: the batch's states, packed
  local name, k, window = rule[1], rule[2], rule[3]
  local function state_key(b) return pre .. 'segst:' .. name .. ':' .. int(b) end
  if k == 1 then
    -- One hit makes a member until it is a window old: the membership score (newest hit + window,
    -- raised only, GT) is the whole state, so there is none to read, merge or write.
    local zadd_args = {}
    for i = 1, #anons do
      zadd_args[#zadd_args + 1] = oldest[i] + window
      zadd_args[#zadd_args + 1] = anons[i]
    end
    add_members(name, bucket, window, zadd_args)
  else
    -- A visitor's state lives in the bucket of its newest hit, and moves forward only. Look newest bucket
    -- first: a late batch (newest hit in B) finds the state a later hit already moved to B+1, and a stale
    -- copy left in B or B-1 by that move is never read while the newer one exists. A state two buckets
    -- ahead is more than a window newer than every hit here, so none of them could join it.
    local states = {}
    local missing, missing_i = anons, nil  -- missing_i nil: missing[j] is anons[j]
    for _, b in ipairs({bucket + 1, bucket, bucket - 1}) do
      if #missing == 0 then break end
      local key = state_key(b)
      if b ~= bucket + 1 or redis.call('EXISTS', key) == 1 then
        local got = hmget_all(key, missing)
        local still, still_i = {}, {}
        for j = 1, #missing do
          local i = missing_i and missing_i[j] or j
          if got[j] then states[i] = got[j]
          else still[#still + 1] = missing[j]; still_i[#still_i + 1] = i end
        end
        missing, missing_i = still, still_i
      end
    end
    local writes, zadd_args = {}, {}  -- bucket -> HSET arguments: the bucket of each merged newest hit
    for i = 1, #anons do
      local state, first, count = texts[i], oldest[i], counts[i]
      local target = bucket
      if states[i] then
        -- Merge two ascending lists from their newest end: the newest k inside the window.
        local a, b = cmsgpack.unpack(states[i]), cmsgpack.unpack(state)
        local ia, ib = #a, #b
        local newest = math.max(a[ia] or 0, b[ib] or 0)
        local rev = {}
        while #rev < k and (ia > 0 or ib > 0) do
          local x
          if ib == 0 or (ia > 0 and a[ia] >= b[ib]) then x = a[ia]; ia = ia - 1 else x = b[ib]; ib = ib - 1 end
          if x <= newest - window then break end
          rev[#rev + 1] = x
        end
        local keep = {}
        for j = #rev, 1, -1 do keep[#keep + 1] = rev[j] end
        state, count, first = cmsgpack.pack(keep), #keep, keep[1]
        target = math.floor(newest / window)
      end
      local args = writes[target]
      if not args then args = {}; writes[target] = args end
      args[#args + 1] = anons[i]
      args[#args + 1] = state
      if count >= k then
        zadd_args[#zadd_args + 1] = first + window
        zadd_args[#zadd_args + 1] = anons[i]
      end
    end
    for b, args in pairs(writes) do
      local key = state_key(b)
      chunked('HSET', key, nil, args, 2)
      expire[key] = math.floor(2 * window / 1000) + 60
    end
    if #zadd_args > 0 then add_members(name, bucket, window, zadd_args) end
  end
end

for key, ttl in pairs(expire) do redis.call('EXPIRE', key, ttl) end
redis.call('HSET', marker, 'token', p.token, 'seq', last_seq)
redis.call('EXPIRE', marker, p.ttl_marker)
return {'applied', n - #seen_list, #seen_list}
