-- put.lua: PUT replace of preloaded payments with If-Match.
--
-- Each thread walks its own index range (common.lua) in order, round and
-- round, and remembers the version of every payment it owns: a PUT based on
-- version v makes it v + 1.  The range (BENCH_PAYMENTS / threads) is far
-- larger than a thread's connections, so a payment is never updated twice at
-- once and every PUT should get 200.  X-Request-Id carries "u<index>.<version>"
-- so that a failure resynchronises that payment: a 409 gives current_version,
-- another failure leaves the version as it was.  wrk counts every failure.
-- wrk calls request() of the first thread once before the run to check it and
-- never sends that request: that call gets GET /healthz and changes nothing.
local c = dofile((os.getenv("BENCH_DIR") or "bench") .. "/common.lua")

setup = c.setup
done = c.done

function init(args)
  lo, hi = c.range(tid)
  cur = lo
  version = {}
  checked = tid ~= 0
end

function request()
  if not checked then
    checked = true
    return wrk.format("GET", "/healthz")
  end
  if cur >= hi then cur = lo end
  local i = cur
  cur = cur + 1
  local v = version[i] or 0
  version[i] = v + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["If-Match"] = '"' .. v .. '"',
    ["X-Request-Id"] = "u" .. i .. "." .. v,
  }
  local id = c.payment_id(i)
  return wrk.format("PUT", "/v1/payments/" .. id, headers, c.replace_body(id, c.org_of(i)))
end

function response(status, headers, body)
  if status == 200 then return end
  -- Header names as the server spells them: Node's are lower case.
  local rid = headers["X-Request-Id"] or headers["x-request-id"] or ""
  local i, v = rid:match("^u(%d+)%.(%d+)$")
  if not i then return end
  i, v = tonumber(i), tonumber(v)
  local current = status == 409 and body:match('"current_version":%s*(%d+)')
  if current then
    version[i] = tonumber(current)
  elseif version[i] == v + 1 then
    version[i] = v
  end
end
