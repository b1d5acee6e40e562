-- wrk script for bench/http_bench.py:
--   BENCH_TOKEN=... BENCH_OUT=x.json wrk ... -s bench/credits.lua -- MODE USERS [HOLD CAPTURE]
--   MODE: read | add | deduct | hot | mixed (80% read, 10% add, 10% deduct)
--         | hold (hold HOLD credits of a random user, then capture CAPTURE of them: the rest is released)
--   random users are 2..USERS; user 1 is the hot user (never picked at random).
-- The bearer token comes from $BENCH_TOKEN. Every response is counted by status, every 200
-- from a change by the ledger kind in its body (a capture's is "capture") and every 201 hold
-- as kind "hold", so the database can be cross-checked against exactly the successful
-- responses. done() writes everything as JSON to $BENCH_OUT.
-- In hold mode a thread's connections share its Lua state, so a 201's hold id goes on the
-- thread's stack and the next request of that thread captures it; a connection creates a
-- hold only when no hold of its thread awaits its capture. When wrk stops, the holds whose
-- capture was never sent (at most one per connection) stay open: http_bench releases them.

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

local mode, users
local headers, body
local hold_body, capture_body
local awaiting = {}  -- hold ids answered and not yet captured (a stack)
statuses = {}
kinds = {}

function init(args)
  mode, users = args[1], tonumber(args[2])
  math.randomseed(os.time() * 1000 + tid * 7919)
  headers = {["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN"),
             ["Content-Type"] = "application/json"}
  body = '{"amount":1}'
  hold_body = '{"amount":' .. (args[3] or 2) .. '}'
  capture_body = '{"amount":' .. (args[4] or 1) .. '}'
end

local function uid()
  return math.random(2, users)
end

local function get(id)
  return wrk.format("GET", "/api/credits/" .. id, headers)
end

local function post(id, kind)
  return wrk.format("POST", "/api/credits/" .. id .. "/" .. kind, headers, body)
end

function request()
  if mode == "read" then return get(uid()) end
  if mode == "add" then return post(uid(), "add") end
  if mode == "deduct" then return post(uid(), "deduct") end
  if mode == "hot" then return post(1, "deduct") end
  if mode == "hold" then
    local hold_id = table.remove(awaiting)
    if hold_id then
      return wrk.format("POST", "/api/holds/" .. hold_id .. "/capture", headers, capture_body)
    end
    return wrk.format("POST", "/api/credits/" .. uid() .. "/holds", headers, hold_body)
  end
  local r = math.random(100)
  if r <= 80 then return get(uid()) end
  if r <= 90 then return post(uid(), "add") end
  return post(uid(), "deduct")
end

function response(status, hdrs, resp_body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 then
    local kind = string.match(resp_body, '"kind": ?"(%a+)"')
    if kind then kinds[kind] = (kinds[kind] or 0) + 1 end
  elseif status == 201 then
    local hold_id = string.match(resp_body, '"hold_id": ?(%d+)')
    if hold_id then
      kinds["hold"] = (kinds["hold"] or 0) + 1
      table.insert(awaiting, hold_id)
    end
  end
end

local function merge(into, from)
  for k, v in pairs(from or {}) do into[tostring(k)] = (into[tostring(k)] or 0) + v end
end

local function encode(t)
  local parts = {}
  for k, v in pairs(t) do table.insert(parts, string.format('"%s": %d', k, v)) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
  local all_statuses, all_kinds = {}, {}
  for _, t in ipairs(threads) do
    merge(all_statuses, t:get("statuses"))
    merge(all_kinds, t:get("kinds"))
  end
  local e = summary.errors
  local f = io.open(os.getenv("BENCH_OUT"), "w")
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}, ' ..
    '"statuses": %s, "kinds": %s}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9),
    encode(all_statuses), encode(all_kinds)))
  f:close()
end
