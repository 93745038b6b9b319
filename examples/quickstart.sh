#!/usr/bin/env bash
# The README's quick start as a script: create a customer, read it back, list, export.
#
#   HEPHAESTUS_KEY=hk_… examples/quickstart.sh            # against http://127.0.0.1:8000
#   HEPHAESTUS_URL=http://host:port HEPHAESTUS_KEY=hk_… examples/quickstart.sh
#
# The key is the one `hephaestus serve` printed on its first start, or one from
# `hephaestus keys create --name quickstart --scope write`.
set -euo pipefail
url="${HEPHAESTUS_URL:-http://127.0.0.1:8000}"
key="${HEPHAESTUS_KEY:?set HEPHAESTUS_KEY to an API key (hk_…)}"
email="${1:-ada+$(date +%s%N)@example.com}"

api() { curl -sS --fail-with-body -H "Authorization: Bearer $key" "$@"; echo; }

echo "# create a customer (retrying with the same Idempotency-Key replays the first answer)"
created=$(api -X POST "$url/api/v1/revenue/customers" \
  -H 'Content-Type: application/json' \
  -H "Idempotency-Key: quickstart-$email" \
  -d "{\"email\": \"$email\", \"name\": \"Ada Lovelace\", \"metadata\": {\"plan\": \"pro\"}}")
echo "$created"
id=$(printf '%s' "$created" | sed -n 's/.*"id":"\(cus_[A-Za-z0-9]*\)".*/\1/p')

echo "# read it back"
api "$url/api/v1/revenue/customers/$id"

echo "# list customers, newest first, two per page"
api "$url/api/v1/revenue/customers?limit=2"

echo "# everything held on this customer"
api "$url/api/v1/revenue/customers/$id/export"
