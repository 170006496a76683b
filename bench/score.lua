-- wrk script: POST /score for a random user among BENCH_USERS (see common.lua).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")
bench.route = "score"

setup = bench.setup
init = bench.init
request = bench.score_request
done = bench.done
