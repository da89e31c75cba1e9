-- list_path.lua: the same request again and again, BENCH_PATH (a path and
-- query, e.g. a cursor page: .../v1/payments?...&page[after]=CURSOR taken
-- from a next link).
local c = dofile((os.getenv("BENCH_DIR") or "bench") .. "/common.lua")

setup = c.setup
done = c.done

local path = os.getenv("BENCH_PATH") or error("bench: list_path.lua needs BENCH_PATH")

function request()
  return wrk.format("GET", path)
end
