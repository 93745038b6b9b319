-- wrk script: POST /api/v1/revenue/quotes, decided by the pricing plugin.
-- Env: HEPHAESTUS_KEY (read scope is enough), CUSTOMER_ID, PRICE_ID.
local key = os.getenv("HEPHAESTUS_KEY")
local body = string.format(
  '{"customer_id":"%s","price_id":"%s","quantity":12,"context":{"channel":"load"}}',
  os.getenv("CUSTOMER_ID"), os.getenv("PRICE_ID"))

function request()
  return wrk.format("POST", "/api/v1/revenue/quotes", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
  }, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("non-2xx/3xx: %d, socket errors: %d\n",
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
