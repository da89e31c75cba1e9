-- common.lua: what every wrk script of bench/run.sh shares.
--
-- Loaded with dofile() by each script, once in wrk's setup/done environment
-- and once in each thread's.  Configuration comes from the environment that
-- bench/run.sh sets:
--   BENCH_DIR       this folder (default "bench")
--   BENCH_SEED      the sample create request (default BENCH_DIR/../spec/seed-payment.json)
--   BENCH_PAYMENTS  how many payments the store was preloaded with
--   BENCH_THREADS   wrk's thread count (each thread owns a disjoint id range)
--   BENCH_STATE     a folder for the preload's progress and completion files
--   BENCH_DEEP      payments of the deep organisation (default 2000, see below)
--
-- Payment ids are derived from an index, so no id list is needed: payment i
-- (0 <= i < BENCH_PAYMENTS) has id M.payment_id(i) and belongs to
-- organisation i % M.ORGS.  The first group of the id is a multiplicative hash
-- of the index, so ids are spread over the key space the way client-chosen
-- random UUIDs are, rather than arriving in key order; the last group is the
-- index itself, which keeps them unique.

local M = {}

M.DIR = os.getenv("BENCH_DIR") or "bench"
M.SEED = os.getenv("BENCH_SEED") or (M.DIR .. "/../spec/seed-payment.json")
M.PAYMENTS = tonumber(os.getenv("BENCH_PAYMENTS") or "10000")
M.THREADS = tonumber(os.getenv("BENCH_THREADS") or "2")
M.STATE = os.getenv("BENCH_STATE") or "."
M.ORGS = 100
M.DEEP = tonumber(os.getenv("BENCH_DEEP") or "2000")

-- Id kinds (second group of the UUID): preloaded payments, payments
-- created by the POST workload (plus the thread number), and the one payment
-- run.sh creates to capture a create answer (create_body.lua).
M.KIND_PRELOAD = 0xb001
M.KIND_CREATE = 0xc000
M.KIND_PROBE = 0xd000

-- The deep organisation: organisation index ORGS (none of the 100 others),
-- preloaded with DEEP payments of their own kind (preload.lua with
-- BENCH_PRELOAD=deep), which the offset list workload pages through.
M.KIND_DEEP = 0xb002
M.DEEP_ORG = M.ORGS

function M.uuid(kind, i)
  return string.format("%08x-%04x-4000-8000-%012x",
                       (i * 2654435761) % 4294967296, kind, i)
end

function M.payment_id(i) return M.uuid(M.KIND_PRELOAD, i) end

function M.org_id(k) return string.format("0e0e0e0e-0000-4000-8000-%012x", k) end

function M.org_of(i) return M.org_id(i % M.ORGS) end

function M.deep_id(i) return M.uuid(M.KIND_DEEP, i) end

-- The half-open index range [lo, hi) that thread tid of M.THREADS owns.
function M.range(tid)
  local lo = math.floor(M.PAYMENTS * tid / M.THREADS)
  local hi = math.floor(M.PAYMENTS * (tid + 1) / M.THREADS)
  return lo, hi
end

-- JSON text without the whitespace between tokens (strings kept intact).
local function minify(s)
  local out, n = {}, 0
  local in_str, esc = false, false
  for ch in s:gmatch(".") do
    if in_str then
      n = n + 1; out[n] = ch
      if esc then esc = false
      elseif ch == "\\" then esc = true
      elseif ch == '"' then in_str = false end
    elseif ch == '"' then
      in_str = true; n = n + 1; out[n] = ch
    elseif not ch:match("%s") then
      n = n + 1; out[n] = ch
    end
  end
  return table.concat(out)
end

-- Replaces the one plain occurrence of `old` in s; fails loudly when the
-- sample no longer has the shape this script expects.
local function replace_once(s, old, new)
  local a, b = s:find(old, 1, true)
  if not a then error("bench: seed payment lacks " .. old) end
  return s:sub(1, a - 1) .. new .. s:sub(b + 1)
end

-- The seed request split around its data.id/version head and its
-- organisation: body = T[1] .. head .. T[2] .. org .. T[3].
-- payment_purpose_coded is fixed to "X": the seed's "string" breaks the spec.
local function load_template()
  local f = assert(io.open(M.SEED, "rb"))
  local s = minify(f:read("*a"))
  f:close()
  s = replace_once(s, '"payment_purpose_coded":"string"', '"payment_purpose_coded":"X"')
  s = replace_once(s, '{"data":{"type":"payments","version":0,', '{"data":{"type":"payments",\1')
  s = replace_once(s, '"organisation_id":"ee2fb143-6dfe-4787-b183-ca8ddd4164d2"',
                   '"organisation_id":"\2"')
  local a = s:find("\1", 1, true)
  local b = s:find("\2", 1, true)
  return { s:sub(1, a - 1), s:sub(a + 1, b - 1), s:sub(b + 1) }
end

local T = load_template()

-- A create request for payment `id` of organisation `org`, version 0 as in the seed.
function M.create_body(id, org)
  return T[1] .. '"id":"' .. id .. '","version":0,' .. T[2] .. org .. T[3]
end

-- A replace request: the version goes in If-Match, so the body names none.
function M.replace_body(id, org)
  return T[1] .. '"id":"' .. id .. '",' .. T[2] .. org .. T[3]
end

M.JSON = { ["Content-Type"] = "application/json" }

-- Every workload reports the same machine-readable line, parsed by run.sh.
-- Requests counts every response; status counts those >= 400.
function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99))))
end

-- Per-thread setup: hands each thread its number (0-based) and keeps the
-- thread objects so done() can collect their counters.
M.threads = {}
function M.setup(thread)
  thread:set("tid", #M.threads)
  M.threads[#M.threads + 1] = thread
end

return M
