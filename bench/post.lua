-- post.lua: durable creates of new payments with ids no other request uses
-- (kind KIND_CREATE + BENCH_POST_ROUND * 0x100 + thread number, index
-- counting up), random organisation.  A second POST run against the same
-- store sets BENCH_POST_ROUND to another number, so its ids are new too.
local c = dofile((os.getenv("BENCH_DIR") or "bench") .. "/common.lua")

setup = c.setup
done = c.done

function init(args)
  math.randomseed(os.time() * 7919 + tid)
  kind = c.KIND_CREATE + (tonumber(os.getenv("BENCH_POST_ROUND")) or 0) * 0x100 + tid
  n = 0
end

function request()
  local id = c.uuid(kind, n)
  n = n + 1
  return wrk.format("POST", "/v1/payments", c.JSON,
                    c.create_body(id, c.org_id(math.random(0, c.ORGS - 1))))
end
