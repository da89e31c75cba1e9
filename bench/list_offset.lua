-- list_offset.lua: a page of 100 at a random offset page 0..19 of the deep
-- organisation (common.lua: its 2,000 payments, preloaded apart), by
-- page[number].  Also driven against nginx serving one such page as a file
-- (any URI maps to it), so both sides pay the same client cost.
local c = dofile((os.getenv("BENCH_DIR") or "bench") .. "/common.lua")

setup = c.setup
done = c.done

local PAGES = math.floor(c.DEEP / 100)

function init(args)
  math.randomseed(os.time() * 7919 + tid)
  prefix = "/v1/payments?filter[organisation_id]=" .. c.org_id(c.DEEP_ORG) .. "&page[size]=100&page[number]="
end

function request()
  return wrk.format("GET", prefix .. math.random(0, PAGES - 1))
end
