-- wrk script: POST /score without a token, answered 401 before any of our work:
-- the server's and the framework's own floor (bench/servers.py). Every request is a
-- non-2xx by design.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local bench = dofile(dir .. "common.lua")
bench.route = "401"

setup = bench.setup
init = bench.init
done = bench.done

function request()
  return wrk.format("POST", "/score", { ["Content-Type"] = "application/json" }, bench.score_body())
end
