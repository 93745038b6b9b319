-- wrk script: PAYMENTS successful POST /api/v1/revenue/payments for CUSTOMER_ID (one thread),
-- then stops sending (wrk itself runs out its duration: tests/load/history.sh stops it).
-- Env: HEPHAESTUS_KEY (write scope), CUSTOMER_ID, PAYMENTS.
local key = os.getenv("HEPHAESTUS_KEY")
local want = tonumber(os.getenv("PAYMENTS"))
local sent, done_count = 0, 0
local body = string.format(
  '{"customer_id":"%s","amount":1.00,"currency":"usd","payment_method":"pm_card_visa"}',
  os.getenv("CUSTOMER_ID"))

function request()
  sent = sent + 1
  return wrk.format("POST", "/api/v1/revenue/payments", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
  }, body)
end

function response(status, headers, body)
  if status == 201 then done_count = done_count + 1 end
  if done_count >= want then wrk.thread:stop() end
end
