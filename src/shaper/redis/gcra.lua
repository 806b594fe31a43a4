-- notion-gateway: budgets shared by replicas (docs/behaviour.md §7), one atomic decision per call.
--
-- The same budget as src/shaper/budget.rs, in integer microseconds on Redis's clock (TIME), so
-- the replicas' own clocks never matter: a GCRA (src/shaper/limiter.rs) and Notion's 60-second
-- window with its reserve rule (src/shaper/window.rs). One hash per budget key:
--   tat    theoretical arrival time of the next request at the sustained rate
--   pause  nothing is released before this instant (Notion's Retry-After)
--   iv     emission interval (1 / effective rate); tol: burst tolerance, both in microseconds.
--          The effective rate is shared too: the replica that changes it (a repeated 429
--          halves it, recovery raises it) writes it, the others adopt it.
--   wb     the window budget in force (the configured one, or what a 429 taught, or a
--          workspace's growing guess); wp: "1" while it is a guess; wl: when a 429 lowered it
--   b:<n>  releases counted in bucket n (250 ms wide, numbered from Redis's epoch)
--   wu     the sum of the b:<n> fields; wo: no b:<n> with a lower n is left
--   q      "<replica>=<depth>:<at>;...": requests waiting on each replica that reported in the
--          last 30 s, for max_wait predictions (on the first key only)
--
-- KEYS: the budgets a release needs (the token's, and its workspace's when it has one).
-- ARGV[1] op: reserve | admit | pause | refund
-- ARGV[2] now in microseconds, or "" for Redis's TIME (tests pass it to compare with Rust)
-- ARGV[3] idle expiry of the keys in milliseconds
-- Per key, for reserve, admit and pause, 6 arguments: interval, tolerance, changed ("1": this
--   replica changed the rate, store it; "0": use the stored one), window budget as configured
--   (0: no window), provisional ("1": that budget is a guess), forget-after in microseconds.
-- reserve, admit: ARGV[4] replica id, ARGV[5] requests waiting on it that no slot is on its way
--   for (the slots this call takes serve as many of them), ARGV[6]
--   resume ("1": this replica worked alone while Redis was unreachable: spend every key's burst
--   before it takes a slot), ARGV[7] slots wanted (admit: 1), ARGV[8] horizon in microseconds.
--   reserve takes the earliest slot every key allows (possibly in the future), then the next
--   ones, as many as wanted while they lie within the horizon; admit takes one only if it is now.
--   Returns {taken, wait, others_waiting, slot, then per key: interval used, next ready - now,
--   window budget in force, window used; then the slots after the first}.
-- pause: ARGV[4] Retry-After in microseconds, ARGV[5] learn ("1": the 429 named this window
--   limit: learn its budget). Returns {until - now, then per key: window budget in force}.
-- refund: ARGV[4] n, ARGV[5 .. 4 + n] the slots (as reserve returned them), then per key
--   ARGV[4 + n + i] interval. Gives n unused slots back. Returns {}.

local op = ARGV[1]
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local ttl = ARGV[3]

-- src/shaper/window.rs: WINDOW, BUCKET, and how long a bucket is counted from its start.
local WINDOW = 60000000
local BUCKET = 250000
local LIVE = 61250000

local function int(x)
  return string.format('%.0f', x)
end

local function burst_of(b)
  return math.max(1, math.floor(b / 6))
end

-- The key's state, with the rate and window the caller passes unless another replica's (or a
-- 429's) is stored. a: index of the key's first argument. Reads the fixed fields only: the
-- buckets are read (HGETALL) only when the reserve rule or a 429 needs them, so a call costs
-- the same however many buckets the minute holds. `wu` (the sum of the b:<n> fields) and `wo`
-- (no b:<n> below it) let the buckets no longer counted at `now` be dropped one by one.
local function load(key, a)
  -- This bucket's count too: the releases this call records mostly land in it.
  local cur = math.floor(now / BUCKET)
  local h = redis.call('HMGET', key, 'tat', 'pause', 'iv', 'tol', 'wb', 'wp', 'wl', 'wu', 'wo',
                       'q', 'b:' .. int(cur))
  local s = { tat = tonumber(h[1]) or now, pause = tonumber(h[2]) or 0,
              iv = tonumber(ARGV[a]), tol = tonumber(ARGV[a + 1]), buckets = nil, index = nil,
              sorted = false, add = {}, gone = {}, key = key, q = h[10] or '', cur = cur,
              curc = tonumber(h[11]) or 0,
              wcfg = tonumber(ARGV[a + 3]), wguess = ARGV[a + 4], forget = tonumber(ARGV[a + 5]) }
  if ARGV[a + 2] ~= '1' and h[3] and h[4] then
    s.iv = tonumber(h[3])
    s.tol = tonumber(h[4])
  end
  s.wb = tonumber(h[5]) or s.wcfg
  s.wp = h[6] or s.wguess
  s.wl = tonumber(h[7]) or 0
  -- As Window::forget_if_due: a learned budget is forgotten after an hour.
  if s.wl > 0 and now - s.wl >= s.forget then
    s.wb, s.wp, s.wl = s.wcfg, s.wguess, 0
  end
  -- The first bucket still counted at `now` (n * BUCKET + LIVE > now): those below go.
  local first = math.floor((now - LIVE) / BUCKET) + 1
  local wu, wo = tonumber(h[8]), tonumber(h[9])
  if not h[1] then
    wu, wo = 0, first
  elseif wu and wo and first - wo <= 256 then
    for n = wo, first - 1 do
      local f = 'b:' .. int(n)
      local c = tonumber(redis.call('HGET', key, f))
      if c then
        wu = wu - c
        s.gone[#s.gone + 1] = f
      end
    end
    wo = math.max(wo, first)
  else
    -- Idle for more than a minute (or written without `wu`): one walk over the fields.
    local all = redis.call('HGETALL', key)
    wu = 0
    for j = 1, #all, 2 do
      local f = all[j]
      if string.sub(f, 1, 2) == 'b:' then
        if tonumber(string.sub(f, 3)) < first then
          s.gone[#s.gone + 1] = f
        else
          wu = wu + tonumber(all[j + 1])
        end
      elseif string.sub(f, 1, 2) == 'q:' then
        s.gone[#s.gone + 1] = f
      end
    end
    wo = first
  end
  -- The expiry is renewed when the key is new or a bucket ended since the last call: at most
  -- a bucket's width short of the last call's.
  s.renew = not h[9] or tonumber(h[9]) ~= wo
  s.wu, s.wo, s.used = wu, wo, wu
  return s
end

-- The buckets counted at `now`, read once per call when a rule needs them (with this call's
-- own records in them).
local function buckets(s)
  if s.buckets then return s.buckets end
  local all = redis.call('HGETALL', s.key)
  local list, index = {}, {}
  for j = 1, #all, 2 do
    local f = all[j]
    if string.sub(f, 1, 2) == 'b:' then
      local n = tonumber(string.sub(f, 3))
      if n >= s.wo then
        local b = { n, tonumber(all[j + 1]) + (s.add[n] or 0) }
        list[#list + 1] = b
        index[n] = b
      end
    end
  end
  for n, c in pairs(s.add) do
    if not index[n] then
      local b = { n, c }
      list[#list + 1] = b
      index[n] = b
    end
  end
  s.buckets, s.index, s.sorted = list, index, false
  return list
end

-- Writes the state back in one HSET: the fixed fields, this call's records in the current
-- bucket, `extra` fields; records in later buckets by HINCRBY; the buckets dropped.
local function store(key, s, extra)
  local fields = { 'tat', int(s.tat), 'pause', int(s.pause), 'iv', int(s.iv), 'tol', int(s.tol),
                   'wb', int(s.wb), 'wp', s.wp, 'wl', int(s.wl), 'wu', int(s.wu),
                   'wo', int(s.wo) }
  for n, c in pairs(s.add) do
    if n == s.cur then
      fields[#fields + 1] = 'b:' .. int(n)
      fields[#fields + 1] = int(s.curc + c)
    else
      redis.call('HINCRBY', key, 'b:' .. int(n), c)
    end
  end
  for _, f in ipairs(extra or {}) do fields[#fields + 1] = f end
  redis.call('HSET', key, unpack(fields))
  if #s.gone > 0 then redis.call('HDEL', key, unpack(s.gone)) end
  if s.renew then redis.call('PEXPIRE', key, ttl) end
end

local function used_at(s, t)
  local n = 0
  for _, b in ipairs(buckets(s)) do
    if b[1] * BUCKET + LIVE > t then n = n + b[2] end
  end
  return n
end

-- Window::ready_at at `now`: the reserve rule.
local function window_ready(s)
  if s.wcfg <= 0 then return now end
  local budget = s.wb
  local burst = burst_of(budget)
  local n = s.used
  -- Nothing counted near the budget: no walk over the buckets.
  if n < burst then return now end
  local list = buckets(s)
  if not s.sorted then
    table.sort(list, function(x, y) return x[1] < y[1] end)
    s.sorted = true
  end
  local f = nil
  if budget > burst then f = math.ceil(LIVE / (budget - burst)) end
  local ready, older = now, 0
  for _, b in ipairs(list) do
    local start = b[1] * BUCKET
    if start + LIVE > now then
      local expiry = start + LIVE
      local room = budget - n - 1 + older
      local r = nil
      if f then r = expiry - room * f elseif room < 0 then r = expiry end
      if r and r > ready then ready = r end
      older = older + b[2]
    end
  end
  return ready
end

-- Window::record: counts `count` releases at t (t >= now: all counted now); a guess half
-- used doubles.
local function window_record(s, t, count)
  if s.wcfg <= 0 then return end
  local n = math.floor(t / BUCKET)
  s.add[n] = (s.add[n] or 0) + count
  if s.index then
    local b = s.index[n]
    if b then
      b[2] = b[2] + count
    else
      b = { n, count }
      s.buckets[#s.buckets + 1] = b
      s.index[n] = b
      s.sorted = false
    end
  end
  s.used = s.used + count
  s.wu = s.wu + count
  -- used_at(s, t) <= s.used: the walk only when it may matter.
  if s.wp == '1' and s.used * 2 >= s.wb and used_at(s, t) * 2 >= s.wb then s.wb = s.wb * 2 end
end

-- Window::learn: the budget Notion's window admitted of ours.
local function window_learn(s, retry_after)
  if s.wcfg <= 0 then return end
  -- A round of 429s arrives within a round trip: one lowering per round (on one replica the
  -- round is told apart by release time; across replicas by this second).
  if s.wl > 0 and now - s.wl < 1000000 then return end
  local back = WINDOW
  if retry_after < WINDOW then back = WINDOW - retry_after + 1000000 end
  local begun = now - back
  local counted = 0
  for _, b in ipairs(buckets(s)) do
    if (b[1] + 1) * BUCKET > begun then counted = counted + b[2] end
  end
  local admitted = math.max(counted - 1, 0)
  if admitted < math.floor(s.wb / 4) then admitted = math.floor(s.wb / 2) end
  local step = math.max(1, math.floor(s.wb / 50))
  local floor = math.max(1, math.floor(s.wcfg / 16))
  s.wb = math.max(math.min(admitted, s.wb - step), floor)
  s.wp = '0'
  s.wl = now
end

if op == 'reserve' or op == 'admit' then
  local replica, depth, resume = ARGV[4], tonumber(ARGV[5]), ARGV[6]
  local want, horizon = tonumber(ARGV[7]), tonumber(ARGV[8])
  if op == 'admit' then want = 1 end
  local states = {}
  for i, key in ipairs(KEYS) do
    local s = load(key, 9 + (i - 1) * 6)
    states[i] = s
    if resume == '1' then
      -- Back from the local share: what this replica sent alone is not in Redis; start as if
      -- the burst were spent (GCRA) and the window held a burst.
      s.tat = math.max(s.tat, now + s.tol)
      local missing = burst_of(s.wb) - s.used
      if s.wcfg > 0 and missing > 0 then window_record(s, now, missing) end
    end
  end
  -- The earliest instant every key allows.
  local function earliest()
    local go = now
    for _, s in ipairs(states) do
      local ready = math.max(s.tat - s.tol, s.pause, window_ready(s))
      if ready > go then go = ready end
    end
    return go
  end
  local go = earliest()
  local slots = {}
  if op == 'reserve' or go <= now then
    local at = go
    while true do
      slots[#slots + 1] = at
      for _, s in ipairs(states) do
        s.tat = math.max(s.tat, at) + s.iv
        window_record(s, at, 1)
      end
      if #slots >= want then break end
      at = earliest()
      if at - now > horizon then break end
    end
  end
  local taken = 0
  if #slots > 0 then taken = 1 end
  -- Requests waiting on the other replicas, from their reports of the last 30 s (older ones,
  -- a replica gone, are dropped), and this replica's report: those the slots taken do not
  -- serve still wait.
  local others, report = 0, nil
  if #KEYS > 0 then
    local q = { replica .. '=' .. int(math.max(depth - #slots, 0)) .. ':' .. int(now) }
    for r, d, at in string.gmatch(states[1].q, '([^=;]+)=(%d+):(%d+)') do
      if r ~= replica and now - tonumber(at) < 30000000 then
        others = others + tonumber(d)
        q[#q + 1] = r .. '=' .. d .. ':' .. at
      end
    end
    report = { 'q', table.concat(q, ';') }
  end
  -- Integers below 2^53 are exact in Lua's numbers and Redis replies with them as integers:
  -- no formatting (as stored fields need, Lua writing large numbers in exponent form).
  local out = { taken, go - now, others, go }
  for i, key in ipairs(KEYS) do
    local s = states[i]
    if i == 1 then store(key, s, report) else store(key, s) end
    out[#out + 1] = s.iv
    out[#out + 1] = math.max(s.tat - s.tol, s.pause, window_ready(s), now) - now
    out[#out + 1] = s.wb
    out[#out + 1] = s.used
  end
  for j = 2, #slots do out[#out + 1] = slots[j] end
  return out
elseif op == 'pause' then
  local retry_after = tonumber(ARGV[4])
  local learn = ARGV[5]
  local untl = now + retry_after
  local out = { int(untl - now) }
  for i, key in ipairs(KEYS) do
    local s = load(key, 6 + (i - 1) * 6)
    s.pause = math.max(s.pause, untl)
    -- As Gcra::pause_until: the pause spends the burst.
    s.tat = math.max(s.tat, untl + s.tol)
    if learn == '1' then window_learn(s, retry_after) end
    s.renew = true
    store(key, s)
    out[#out + 1] = int(s.wb)
  end
  return out
elseif op == 'refund' then
  local count = tonumber(ARGV[4])
  for i, key in ipairs(KEYS) do
    local iv = tonumber(ARGV[4 + count + i])
    -- The GCRA gets back an interval only for a slot less than an interval old: since it was
    -- taken, tat stayed ahead of now, so lowering it is exactly as if it was never taken. An
    -- older slot's interval may have passed while the key idled: giving it back would let
    -- the next requests go early. Its window count goes back either way.
    local credit = 0
    for j = 1, count do
      if tonumber(ARGV[4 + j]) + iv > now then credit = credit + 1 end
    end
    local tat = tonumber(redis.call('HGET', key, 'tat'))
    if tat and credit > 0 then
      redis.call('HSET', key, 'tat', int(math.max(tat - credit * iv, now)))
    end
    local back = 0
    for j = 1, count do
      local n = 'b:' .. int(math.floor(tonumber(ARGV[4 + j]) / BUCKET))
      local c = tonumber(redis.call('HGET', key, n))
      if c and c > 1 then
        redis.call('HINCRBY', key, n, -1)
      elseif c then
        redis.call('HDEL', key, n)
      end
      if c then back = back + 1 end
    end
    -- wu stays the sum of the buckets.
    if back > 0 and redis.call('HEXISTS', key, 'wu') == 1 then
      redis.call('HINCRBY', key, 'wu', -back)
    end
  end
  return {}
end
return redis.error_reply('notion-gateway: unknown op ' .. tostring(op))
