-- wrk script: GET one customer. Env: HEPHAESTUS_KEY, CUSTOMER_ID.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("HEPHAESTUS_KEY")
wrk.path = "/api/v1/revenue/customers/" .. os.getenv("CUSTOMER_ID")

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format("non-2xx/3xx: %d, socket errors: %d\n",
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
