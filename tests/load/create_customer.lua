-- wrk script: POST /api/v1/revenue/customers with a unique email per request.
-- Env: HEPHAESTUS_KEY (an API key with write scope).
local key = os.getenv("HEPHAESTUS_KEY")
local run = tostring(os.time())
local threads = 0
local n = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function request()
  n = n + 1
  local body = string.format(
    '{"email":"load-%s-%d-%d@example.com","name":"Load Test","metadata":{"source":"wrk"}}',
    run, tid, n)
  return wrk.format("POST", "/api/v1/revenue/customers", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
  }, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("non-2xx/3xx: %d, socket errors: %d\n",
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
