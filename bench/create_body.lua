-- create_body.lua: writes the create request of the probe payment (kind
-- KIND_PROBE, index 0, organisation 0: an id no workload uses), built as
-- post.lua builds its bodies, to BENCH_STATE/create_body.json, then ends.
-- wrk is the only Lua interpreter run.sh can count on, so it runs this with
-- one thread and one connection; the only request sent is GET /healthz.
local c = dofile((os.getenv("BENCH_DIR") or "bench") .. "/common.lua")

function init(args)
  local f = assert(io.open(c.STATE .. "/create_body.json", "wb"))
  assert(f:write(c.create_body(c.uuid(c.KIND_PROBE, 0), c.org_id(0))))
  assert(f:close())
end

function request()
  return wrk.format("GET", "/healthz")
end

function response(status, headers, body)
  wrk.thread:stop()
end
