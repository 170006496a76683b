-- wrk script: POST /events (a reaction without a decision: stored, and the
-- user's profile brought up to date) for a random user among BENCH_USERS.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")
bench.route = "events"

setup = bench.setup
init = bench.init
request = bench.event_request
done = bench.done
