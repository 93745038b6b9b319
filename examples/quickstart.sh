#!/usr/bin/env bash
# The README's quick start as a script, every call in the same order: create a customer
# (with an Idempotency-Key, sent twice to show the replay), list customers, change their
# metadata, charge them on the sandbox gateway, refund part of it, read the customer, export
# everything held on them, and erase their personal data. Only `keys create` (a CLI command,
# not an API call) is left out.
#
#   HEPHAESTUS_KEY=hk_… examples/quickstart.sh            # against http://127.0.0.1:8000
#   HEPHAESTUS_URL=http://host:port HEPHAESTUS_KEY=hk_… examples/quickstart.sh [EMAIL]
#
# The key must be an admin key (the one `hephaestus serve` printed on its first start):
# exporting and erasing a customer need the admin scope. The charge uses the sandbox's
# test card, so run it against a server without STRIPE_SECRET_KEY.
set -euo pipefail
url="${HEPHAESTUS_URL:-http://127.0.0.1:8000}"
key="${HEPHAESTUS_KEY:?set HEPHAESTUS_KEY to an admin API key (hk_…)}"
email="${1:-ada+$(date +%s%N)@example.com}"

api() { curl -sS --fail-with-body -H "Authorization: Bearer $key" "$@"; echo; }
json() { api -H 'Content-Type: application/json' "$@"; }
# The id with prefix $1 (`cus`, `pay`) at the top of the JSON object $2.
id_of() { printf '%s' "$2" | sed -n "s/^{\"id\":\"\($1_[A-Za-z0-9]*\)\".*/\1/p"; }

echo "# create a customer (retrying with the same Idempotency-Key replays the first answer)"
create() {
  json -X POST "$url/api/v1/revenue/customers" -H "Idempotency-Key: quickstart-$email" \
    -d "{\"email\": \"$email\", \"name\": \"Ada Lovelace\", \"metadata\": {\"plan\": \"pro\"}}"
}
created=$(create)
echo "$created"
id=$(id_of cus "$created")
[ -n "$id" ] || { echo "quickstart.sh: no customer id in the answer" >&2; exit 1; }
echo "# the same request again: the first answer, replayed"
replayed=$(create)
echo "$replayed"
[ "$(id_of cus "$replayed")" = "$id" ] || { echo "quickstart.sh: the retry was not replayed" >&2; exit 1; }

echo "# list customers, newest first"
api "$url/api/v1/revenue/customers?limit=10"

echo "# change their details: metadata keys are merged"
json -X POST "$url/api/v1/revenue/customers/$id" -d '{"metadata": {"plan": "enterprise"}}'

echo "# charge them through the sandbox gateway (amounts are exact decimals in major units)"
paid=$(json -X POST "$url/api/v1/revenue/payments" -H "Idempotency-Key: quickstart-order-$email" \
  -d "{\"customer_id\": \"$id\", \"amount\": 97.00, \"currency\": \"usd\", \"payment_method\": \"pm_card_visa\"}")
echo "$paid"
payment=$(id_of pay "$paid")
[ -n "$payment" ] || { echo "quickstart.sh: no payment id in the answer" >&2; exit 1; }

echo "# refund part of it"
json -X POST "$url/api/v1/revenue/payments/$payment/refunds" -d '{"amount": 25.00}'

echo "# the customer, and everything held on them"
api "$url/api/v1/revenue/customers/$id"
api "$url/api/v1/revenue/customers/$id/export"

echo "# erase their personal data (the record and its payments stay, anonymous)"
api -X DELETE "$url/api/v1/revenue/customers/$id"
