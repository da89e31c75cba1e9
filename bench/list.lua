-- list.lua: the first page of 100 payments of a random organisation.
local c = dofile((os.getenv("BENCH_DIR") or "bench") .. "/common.lua")

setup = c.setup
done = c.done

function init(args)
  math.randomseed(os.time() * 7919 + tid)
end

function request()
  local k = math.random(0, c.ORGS - 1)
  return wrk.format("GET", "/v1/payments?filter[organisation_id]=" .. c.org_id(k) .. "&page[size]=100")
end
