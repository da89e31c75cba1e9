-- get.lua: GET /v1/payments/{id} of a random preloaded payment.
-- Also driven against nginx (any id maps to the same bytes there), so both
-- sides pay the same client cost.
local c = dofile((os.getenv("BENCH_DIR") or "bench") .. "/common.lua")

setup = c.setup
done = c.done

function init(args)
  math.randomseed(os.time() * 7919 + tid)
end

function request()
  local i = math.random(0, c.PAYMENTS - 1)
  return wrk.format("GET", "/v1/payments/" .. c.payment_id(i))
end
