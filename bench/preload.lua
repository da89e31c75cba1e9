-- preload.lua: creates payments 0 .. BENCH_PAYMENTS-1 (see common.lua) once each.
--
-- Each thread owns a disjoint index range and sends one POST per index.  The
-- index travels in X-Request-Id, which the server echoes, so a response tells
-- which payment it answers: the first 201 or 409 (already there) completes it,
-- a 5xx queues it again, any other status is counted as rejected (a broken
-- body would be rejected for every index: run.sh stops on it).  A request
-- that was generated but got no answer within RESEND_S seconds is sent again.
-- wrk calls request() of the first thread once before the run to check it and
-- never sends that request: that call gets the filler.  A thread with nothing left to send keeps its
-- connections busy with GET /healthz.  When a thread has all its answers it
-- writes BENCH_STATE/preload.done.<tid> and stops; run.sh waits for every
-- thread's file and then ends wrk with SIGINT.  Progress goes to
-- BENCH_STATE/preload.progress.<tid>.
-- With BENCH_PRELOAD=deep it creates the deep organisation's payments
-- instead (common.lua: ids of kind KIND_DEEP, all in organisation DEEP_ORG;
-- BENCH_PAYMENTS is then their count).
local c = dofile((os.getenv("BENCH_DIR") or "bench") .. "/common.lua")

setup = c.setup

function init(args)
  lo, hi = c.range(tid)
  next_i = lo
  retry = {}
  pending = {}   -- index -> os.time() of its last send, until its first answer
  created, existed, rejected, retried, answered = 0, 0, 0, 0, 0
  quota = hi - lo
  filler = wrk.format("GET", "/healthz")
  first_rejection = ""
  compacted = false
  checked = tid ~= 0
  report_every = 10000
  deep = os.getenv("BENCH_PRELOAD") == "deep"
end

function finish()
  local f = io.open(c.STATE .. "/preload.done." .. tid, "w")
  if f then f:write(answered, "\n"); f:close() end
  wrk.thread:stop()
end

local function progress()
  local f = io.open(c.STATE .. "/preload.progress." .. tid, "w")
  if f then f:write(answered, "\n"); f:close() end
end

local RESEND_S = 5

-- An index sent more than RESEND_S seconds ago and still unanswered, or nil.
local function overdue(now)
  for i, t in pairs(pending) do
    if now - t >= RESEND_S then return i end
  end
  return nil
end

function request()
  if not checked then
    checked = true
    return filler
  end
  local i
  local now = os.time()
  if next_i < hi then
    i = next_i
    next_i = next_i + 1
  elseif #retry > 0 then
    i = table.remove(retry)
  else
    if not compacted then
      -- pending's hash part still spans the whole range: shrink it once so
      -- that overdue() walks only what is really in flight.
      local t = {}
      for k, v in pairs(pending) do t[k] = v end
      pending, compacted = t, true
    end
    i = overdue(now)
    if not i then return filler end
  end
  pending[i] = now
  local headers = { ["Content-Type"] = "application/json", ["X-Request-Id"] = "p" .. i }
  local body
  if deep then
    body = c.create_body(c.deep_id(i), c.org_id(c.DEEP_ORG))
  else
    body = c.create_body(c.payment_id(i), c.org_of(i))
  end
  return wrk.format("POST", "/v1/payments", headers, body)
end

function response(status, headers, body)
  -- Header names as the server spells them: Node's are lower case.
  local rid = headers["X-Request-Id"] or headers["x-request-id"]
  if not rid or rid:sub(1, 1) ~= "p" then return end
  local i = tonumber(rid:sub(2))
  if not pending[i] then return end   -- a late answer to a resent request
  if status == 201 then
    created = created + 1
  elseif status == 409 then
    existed = existed + 1
  elseif status >= 500 then
    retried = retried + 1
    retry[#retry + 1] = i
    return
  else
    rejected = rejected + 1
    if first_rejection == "" then first_rejection = status .. " " .. body:sub(1, 300) end
  end
  pending[i] = nil
  answered = answered + 1
  if answered % report_every == 0 then progress() end
  if answered == quota then finish() end
end

function done(summary, latency, requests)
  local t = { created = 0, existed = 0, rejected = 0, retried = 0 }
  local why = ""
  for _, th in ipairs(c.threads) do
    for k in pairs(t) do t[k] = t[k] + (th:get(k) or 0) end
    local r = th:get("first_rejection")
    if r and r ~= "" and why == "" then why = r end
  end
  io.write(string.format("PRELOAD created=%d existed=%d rejected=%d retried=%d\n",
                         t.created, t.existed, t.rejected, t.retried))
  if why ~= "" then io.write("PRELOAD first rejection: ", why, "\n") end
  c.done(summary, latency, requests)
end
