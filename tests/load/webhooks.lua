-- wrk script (run with -t1): POST signed Stripe events to the webhook endpoint, each once.
-- Env: EVENTS_FILE, written by webhooks.py just before the run.
local events = {}
local i = 0

function init(args)
  for line in io.lines(os.getenv("EVENTS_FILE")) do
    local sig, payload = line:match("^([^\t]+)\t(.*)$")
    events[#events + 1] = { sig, payload }
  end
end

function request()
  i = i + 1
  local e = events[((i - 1) % #events) + 1]
  return wrk.format("POST", "/api/v1/revenue/webhooks/stripe", {
    ["Content-Type"] = "application/json",
    ["Stripe-Signature"] = e[1],
  }, e[2])
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("non-2xx/3xx: %d, socket errors: %d\n",
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
