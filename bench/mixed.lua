-- wrk script: a mix of POST /score and POST /reward (BENCH_MIX_SCORE of them
-- /score, default 0.5), for random users among BENCH_USERS (see common.lua).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")
bench.route = "mixed"

local share = tonumber(os.getenv("BENCH_MIX_SCORE") or "0.5")

setup = bench.setup
init = bench.init
done = bench.done

function request()
  if math.random() < share then
    return bench.score_request()
  end
  return bench.reward_request()
end
