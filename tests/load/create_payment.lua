-- wrk script: POST /api/v1/revenue/payments on the sandbox gateway (pm_card_visa).
-- Env: HEPHAESTUS_KEY (write scope), CUSTOMER_ID.
local key = os.getenv("HEPHAESTUS_KEY")
local body = string.format(
  '{"customer_id":"%s","amount":97.00,"currency":"usd","payment_method":"pm_card_visa","description":"load"}',
  os.getenv("CUSTOMER_ID"))

function request()
  return wrk.format("POST", "/api/v1/revenue/payments", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
  }, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("non-2xx/3xx: %d, socket errors: %d\n",
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
