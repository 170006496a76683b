-- wrk script: POST /reward for a random user among BENCH_USERS (see common.lua).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")
bench.route = "reward"

setup = bench.setup
init = bench.init
request = bench.reward_request
done = bench.done
