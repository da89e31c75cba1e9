-- post_org.lua: post.lua's durable creates, every one in one organisation
-- (index BENCH_POST_ORG of common.lua's, default 0): the organisation the
-- webhook runs of bench/run.sh register their endpoints for, so that every
-- create is owed to each of them.  BENCH_POST_ROUND keeps ids new per run.
local c = dofile((os.getenv("BENCH_DIR") or "bench") .. "/common.lua")

setup = c.setup
done = c.done

function init(args)
  kind = c.KIND_CREATE + (tonumber(os.getenv("BENCH_POST_ROUND")) or 0) * 0x100 + tid
  org = c.org_id(tonumber(os.getenv("BENCH_POST_ORG")) or 0)
  n = 0
end

function request()
  local id = c.uuid(kind, n)
  n = n + 1
  return wrk.format("POST", "/v1/payments", c.JSON, c.create_body(id, org))
end
