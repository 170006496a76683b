-- Shared by the wrk scripts: per-thread seeding, request bodies, the JSON summary.
--
-- wrk runs a script in one Lua state per thread plus one for setup() and done().
-- Each thread seeds its own generator from /dev/urandom and its thread number, so
-- threads (and runs) never send the same sequence of users and candidates.

local M = {}

M.USERS = tonumber(os.getenv("BENCH_USERS") or "1000")
M.TASKS = 200 -- each body draws its candidates from task-0 .. task-199
M.CANDIDATES = 5
M.REWARDS = { -1, 0.1, 0.6, 1.0 }
M.SOURCES = { "todoist", "calendar", "notion", "email" }

local token = os.getenv("BENCH_TOKEN")
if token == nil or token == "" then
  error("BENCH_TOKEN is not set: the routes need a service token")
end
-- The old service answers the same bodies on its own paths (/score/egreedy, ...).
M.SCORE_PATH = os.getenv("BENCH_SCORE_PATH") or "/score"
M.REWARD_PATH = os.getenv("BENCH_REWARD_PATH") or "/reward"
M.HEADERS = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Token " .. token,
}

-- setup() runs in the main state, once per thread: number the threads.
local counter = 0
function M.setup(thread)
  counter = counter + 1
  thread:set("thread_number", counter)
end

local function urandom_seed()
  local f = io.open("/dev/urandom", "rb")
  if f == nil then
    return os.time()
  end
  local bytes = f:read(4)
  f:close()
  local a, b, c, d = bytes:byte(1, 4)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

-- init() runs in each thread's state before its first request.
function M.init()
  local n = thread_number or 0
  -- LuaJIT keeps the seed as a double; keep it well inside 2^53.
  math.randomseed((urandom_seed() + n * 1000003) % 2147483647)
  -- The first draws after seeding are weakly mixed in some Lua builds.
  for _ = 1, 10 do
    math.random()
  end
end

function M.user()
  return "user-" .. math.random(0, M.USERS - 1)
end

function M.features()
  return string.format(
    '{"hour_of_day":%d,"is_overdue":%s,"task_age_days":%.2f,"priority":%d}',
    math.random(0, 23),
    math.random() < 0.3 and "true" or "false",
    math.random() * 60,
    math.random(1, 4)
  )
end

-- Distinct task ids, so the service never answers 400 for a duplicate.
function M.task_ids(n)
  local ids, seen = {}, {}
  while #ids < n do
    local id = math.random(0, M.TASKS - 1)
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
    end
  end
  return ids
end

function M.score_body()
  local parts = {}
  for i, id in ipairs(M.task_ids(M.CANDIDATES)) do
    parts[i] = string.format(
      '{"id":"task-%d","content":"Task number %d","source":"%s","source_id":"src-%d",'
        .. '"features":%s}',
      id,
      id,
      M.SOURCES[math.random(#M.SOURCES)],
      id,
      M.features()
    )
  end
  return string.format(
    '{"user_id":"%s","candidates":[%s],"context":{"hour_of_day":%d,"day_of_week":%d}}',
    M.user(),
    table.concat(parts, ","),
    math.random(0, 23),
    math.random(0, 6)
  )
end

function M.reward_body()
  return string.format(
    '{"user_id":"%s","tip_id":"task-%d","reward":%s,"features":%s,"day_of_week":%d}',
    M.user(),
    math.random(0, M.TASKS - 1),
    tostring(M.REWARDS[math.random(#M.REWARDS)]),
    M.features(),
    math.random(0, 6)
  )
end

M.KINDS = { "served", "served", "done", "dismissed", "snoozed", "viewed" }

function M.event_body()
  local kind = M.KINDS[math.random(#M.KINDS)]
  local dwell = ""
  if kind == "done" then
    dwell = string.format(',"dwell_ms":%d', math.random(1000, 900000))
  end
  return string.format(
    '{"user_id":"%s","tip_id":"task-%d","kind":"%s","hour_of_day":%d%s}',
    M.user(),
    math.random(0, M.TASKS - 1),
    kind,
    math.random(0, 23),
    dwell
  )
end

function M.score_request()
  return wrk.format("POST", M.SCORE_PATH, M.HEADERS, M.score_body())
end

function M.reward_request()
  return wrk.format("POST", M.REWARD_PATH, M.HEADERS, M.reward_body())
end

function M.event_request()
  return wrk.format("POST", "/events", M.HEADERS, M.event_body())
end

-- done() runs in the main state after the run: one JSON line for bench/report.py.
-- wrk counts a status over 399 in errors.status; socket errors are the others.
function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(
    string.format(
      'BENCH_RESULT {"route":"%s","duration_us":%d,"requests":%d,"bytes":%d,'
        .. '"requests_per_s":%.2f,"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,'
        .. '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d},'
        .. '"errors":{"non_2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
      M.route or "?",
      summary.duration,
      summary.requests,
      summary.bytes,
      summary.requests / (summary.duration / 1e6),
      latency.mean,
      latency.stdev,
      latency.max,
      latency:percentile(50),
      latency:percentile(75),
      latency:percentile(90),
      latency:percentile(99),
      latency:percentile(99.9),
      e.status,
      e.connect,
      e.read,
      e.write,
      e.timeout
    )
  )
end

return M
