-- notion-gateway: budgets shared by replicas (docs/behaviour.md §7), one atomic decision per call.
--
-- The same GCRA as src/shaper/limiter.rs, in integer microseconds on Redis's clock (TIME), so the
-- replicas' own clocks never matter. One hash per budget key:
--   tat    theoretical arrival time of the next request at the sustained rate
--   pause  nothing is released before this instant (Notion's Retry-After)
--   iv     emission interval (1 / effective rate); tol: burst tolerance, both in microseconds.
--          The effective rate is shared too: the replica that changes it (a repeated 429
--          halves it, recovery raises it) writes it, the others adopt it.
--   q:<replica>  "<depth>:<at>": requests waiting on that replica, for max_wait predictions
--
-- KEYS: the budgets a release needs (the token's, and its workspace's when it has one).
-- ARGV[1] op: reserve | admit | pause | refund
-- ARGV[2] now in microseconds, or "" for Redis's TIME (tests pass it to compare with limiter.rs)
-- ARGV[3] idle expiry of the keys in milliseconds
-- reserve, admit: ARGV[4] replica id, ARGV[5] requests waiting on it after this one, then per
--   key: interval, tolerance, changed ("1": this replica changed the rate, store it; "0": use
--   the stored one). reserve takes the earliest slot every key allows (possibly in the future)
--   and returns how far ahead it is; admit takes it only if it is now.
--   Returns {taken, wait, others_waiting, then per key: interval used, next ready - now}.
-- pause: ARGV[4] Retry-After in microseconds, then per key: interval, tolerance, changed.
--   Returns {until - now}.
-- refund: per key ARGV[3 + i] interval. Gives one unused slot back. Returns {}.

local op = ARGV[1]
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local ttl = ARGV[3]

local function int(x)
  return string.format('%.0f', x)
end

-- The key's state, with the rate the caller passes unless another replica's is stored.
local function load(key, iv, tol, changed)
  local h = redis.call('HMGET', key, 'tat', 'pause', 'iv', 'tol')
  local s = { tat = tonumber(h[1]) or now, pause = tonumber(h[2]) or 0,
              iv = tonumber(iv), tol = tonumber(tol) }
  if changed ~= '1' and h[3] and h[4] then
    s.iv = tonumber(h[3])
    s.tol = tonumber(h[4])
  end
  return s
end

local function store(key, s)
  redis.call('HSET', key, 'tat', int(s.tat), 'pause', int(s.pause), 'iv', int(s.iv),
             'tol', int(s.tol))
  redis.call('PEXPIRE', key, ttl)
end

if op == 'reserve' or op == 'admit' then
  local replica, depth = ARGV[4], tonumber(ARGV[5])
  local states = {}
  local go = now
  for i, key in ipairs(KEYS) do
    local a = 5 + (i - 1) * 3
    local s = load(key, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
    states[i] = s
    local ready = math.max(s.tat - s.tol, s.pause)
    if ready > go then go = ready end
  end
  local taken = 1
  if op == 'admit' and go > now then taken = 0 end
  -- Requests waiting on the other replicas, from their reports of the last 30 s.
  local others = 0
  local fields = redis.call('HGETALL', KEYS[1])
  for j = 1, #fields, 2 do
    local f = fields[j]
    if string.sub(f, 1, 2) == 'q:' and string.sub(f, 3) ~= replica then
      local d, at = string.match(fields[j + 1], '^(%d+):(%d+)$')
      if d and now - tonumber(at) < 30000000 then others = others + tonumber(d) end
    end
  end
  redis.call('HSET', KEYS[1], 'q:' .. replica, int(depth) .. ':' .. int(now))
  local out = { taken, int(go - now), others }
  for i, key in ipairs(KEYS) do
    local s = states[i]
    if taken == 1 then s.tat = math.max(s.tat, go) + s.iv end
    store(key, s)
    out[#out + 1] = int(s.iv)
    out[#out + 1] = int(math.max(s.tat - s.tol, s.pause, now) - now)
  end
  return out
elseif op == 'pause' then
  local untl = now + tonumber(ARGV[4])
  for i, key in ipairs(KEYS) do
    local a = 4 + (i - 1) * 3
    local s = load(key, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
    s.pause = math.max(s.pause, untl)
    -- As Gcra::pause_until: the pause spends the burst.
    s.tat = math.max(s.tat, untl + s.tol)
    store(key, s)
  end
  return { int(untl - now) }
elseif op == 'refund' then
  for i, key in ipairs(KEYS) do
    local tat = tonumber(redis.call('HGET', key, 'tat'))
    if tat then
      redis.call('HSET', key, 'tat', int(math.max(tat - tonumber(ARGV[3 + i]), now)))
    end
  end
  return {}
end
return redis.error_reply('notion-gateway: unknown op ' .. tostring(op))
