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
--   q:<replica>  "<depth>:<at>": requests waiting on that replica, for max_wait predictions
--
-- KEYS: the budgets a release needs (the token's, and its workspace's when it has one).
-- ARGV[1] op: reserve | admit | pause | refund
-- ARGV[2] now in microseconds, or "" for Redis's TIME (tests pass it to compare with Rust)
-- ARGV[3] idle expiry of the keys in milliseconds
-- Per key, for reserve, admit and pause, 6 arguments: interval, tolerance, changed ("1": this
--   replica changed the rate, store it; "0": use the stored one), window budget as configured
--   (0: no window), provisional ("1": that budget is a guess), forget-after in microseconds.
-- reserve, admit: ARGV[4] replica id, ARGV[5] requests waiting on it after these, ARGV[6]
--   resume ("1": this replica worked alone while Redis was unreachable: spend every key's burst
--   before it takes a slot), ARGV[7] slots wanted (admit: 1), ARGV[8] horizon in microseconds.
--   reserve takes the earliest slot every key allows (possibly in the future), then the next
--   ones, as many as wanted while they lie within the horizon; admit takes one only if it is now.
--   Returns {taken, wait, others_waiting, slot, then per key: interval used, next ready - now,
--   window budget in force, window used; then the slots after the first}.
-- pause: ARGV[4] Retry-After in microseconds, ARGV[5] learn ("1": the 429 named this window
--   limit: learn its budget). Returns {until - now, then per key: window budget in force}.
-- refund: ARGV[4] the slot (as reserve returned it), then per key ARGV[4 + i] interval. Gives
--   one unused slot back. Returns {}.

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
-- 429's) is stored. a: index of the key's first argument. The buckets are sorted only when the
-- reserve rule needs their order (a window near its budget); `used` counts those live at `now`.
local function load(key, a)
  local h = redis.call('HGETALL', key)
  local stored, buckets, index, queues = {}, {}, {}, {}
  local used = 0
  for j = 1, #h, 2 do
    local f, v = h[j], h[j + 1]
    local p = string.sub(f, 1, 2)
    if p == 'b:' then
      local b = { tonumber(string.sub(f, 3)), tonumber(v) }
      buckets[#buckets + 1] = b
      index[b[1]] = b
      if b[1] * BUCKET + LIVE > now then used = used + b[2] end
    elseif p == 'q:' then
      queues[string.sub(f, 3)] = v
    else
      stored[f] = v
    end
  end
  local s = { tat = tonumber(stored.tat) or now, pause = tonumber(stored.pause) or 0,
              iv = tonumber(ARGV[a]), tol = tonumber(ARGV[a + 1]), buckets = buckets,
              index = index, sorted = false, dirty = {}, used = used,
              queues = queues, wcfg = tonumber(ARGV[a + 3]), wguess = ARGV[a + 4],
              forget = tonumber(ARGV[a + 5]) }
  if ARGV[a + 2] ~= '1' and stored.iv and stored.tol then
    s.iv = tonumber(stored.iv)
    s.tol = tonumber(stored.tol)
  end
  s.wb = tonumber(stored.wb) or s.wcfg
  s.wp = stored.wp or s.wguess
  s.wl = tonumber(stored.wl) or 0
  -- As Window::forget_if_due: a learned budget is forgotten after an hour.
  if s.wl > 0 and now - s.wl >= s.forget then
    s.wb, s.wp, s.wl = s.wcfg, s.wguess, 0
  end
  return s
end

-- Writes the state back: the changed buckets, and deletes those no longer counted by `now`
-- (not by a slot's time: a slot reserved ahead does not end what still counts until then, as
-- Window::record_at).
local function store(key, s)
  local fields = { 'tat', int(s.tat), 'pause', int(s.pause), 'iv', int(s.iv), 'tol', int(s.tol),
                   'wb', int(s.wb), 'wp', s.wp, 'wl', int(s.wl) }
  for n, _ in pairs(s.dirty) do
    fields[#fields + 1] = 'b:' .. int(n)
    fields[#fields + 1] = int(s.index[n][2])
  end
  redis.call('HSET', key, unpack(fields))
  local gone = {}
  for _, b in ipairs(s.buckets) do
    if b[1] * BUCKET + LIVE <= now then gone[#gone + 1] = 'b:' .. int(b[1]) end
  end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  redis.call('PEXPIRE', key, ttl)
end

local function used_at(s, t)
  local n = 0
  for _, b in ipairs(s.buckets) do
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
  if not s.sorted then
    table.sort(s.buckets, function(x, y) return x[1] < y[1] end)
    s.sorted = true
  end
  local f = nil
  if budget > burst then f = math.ceil(LIVE / (budget - burst)) end
  local ready, older = now, 0
  for _, b in ipairs(s.buckets) do
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
  local b = s.index[n]
  if b then
    b[2] = b[2] + count
  else
    b = { n, count }
    local last = s.buckets[#s.buckets]
    if last and last[1] > n then s.sorted = false end
    s.buckets[#s.buckets + 1] = b
    s.index[n] = b
  end
  s.dirty[n] = true
  s.used = s.used + count
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
  for _, b in ipairs(s.buckets) do
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
  -- Requests waiting on the other replicas, from their reports of the last 30 s.
  local others = 0
  for r, v in pairs(states[1] and states[1].queues or {}) do
    if r ~= replica then
      local d, at = string.match(v, '^(%d+):(%d+)$')
      if d and now - tonumber(at) < 30000000 then others = others + tonumber(d) end
    end
  end
  if #KEYS > 0 then
    -- Those wanted beyond the slots taken still wait.
    local waiting = depth + math.max(want - #slots, 0)
    redis.call('HSET', KEYS[1], 'q:' .. replica, int(waiting) .. ':' .. int(now))
  end
  local out = { taken, int(go - now), others, int(go) }
  for i, key in ipairs(KEYS) do
    local s = states[i]
    store(key, s)
    out[#out + 1] = int(s.iv)
    out[#out + 1] = int(math.max(s.tat - s.tol, s.pause, window_ready(s), now) - now)
    out[#out + 1] = int(s.wb)
    out[#out + 1] = int(s.used)
  end
  for j = 2, #slots do out[#out + 1] = int(slots[j]) end
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
    store(key, s)
    out[#out + 1] = int(s.wb)
  end
  return out
elseif op == 'refund' then
  local slot = tonumber(ARGV[4])
  local n = 'b:' .. int(math.floor(slot / BUCKET))
  for i, key in ipairs(KEYS) do
    local tat = tonumber(redis.call('HGET', key, 'tat'))
    if tat then
      redis.call('HSET', key, 'tat', int(math.max(tat - tonumber(ARGV[4 + i]), now)))
    end
    local c = tonumber(redis.call('HGET', key, n))
    if c and c > 1 then
      redis.call('HINCRBY', key, n, -1)
    elseif c then
      redis.call('HDEL', key, n)
    end
  end
  return {}
end
return redis.error_reply('notion-gateway: unknown op ' .. tostring(op))
