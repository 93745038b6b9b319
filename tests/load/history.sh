#!/usr/bin/env bash
# Does a decision cost more for a customer with a long history? Quotes
# (`POST /api/v1/revenue/quotes`, decided by the built-in default so only the host's reads
# are measured) for a new customer and for one with PAYMENTS payments, alternating, on the
# release build, from a separate process (wrk). Results go to stdout; record them in
# BENCHMARKS.md with the machine and date.
#
#   tests/load/history.sh sqlite|postgres [payments, default 100000] [seconds, default 10] [connections, default 16]
#
# Needs wrk, curl, python3, and for postgres a server at BENCH_PG_SERVER (default
# postgres://postgres@127.0.0.1:5432; database hephaestus_history, recreated).
set -euo pipefail
cd "$(dirname "$0")/../.."
db="${1:?sqlite or postgres}"
payments="${2:-100000}"
secs="${3:-10}"
conns="${4:-16}"
port=18082
base="http://127.0.0.1:$port"
# BENCH_BIN runs another build (one already built, or an older one to compare).
bin="${BENCH_BIN:-target/release/hephaestus}"
[ -n "${BENCH_BIN:-}" ] || cargo build --release -p hephaestus >/dev/null
dir=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$dir"' EXIT
url=""
if [ "$db" = postgres ]; then
  pg="${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}"
  psql "$pg/postgres" -qc 'DROP DATABASE IF EXISTS hephaestus_history' -c 'CREATE DATABASE hephaestus_history'
  url="$pg/hephaestus_history"
fi
mkdir -p "$dir/plugins"
env -u DATABASE_URL ${url:+DATABASE_URL=$url} HEPHAESTUS_DATA_DIR="$dir" HEPHAESTUS_PLUGIN_DIR="$dir/plugins" \
  HEPHAESTUS_RATE_LIMIT=off HEPHAESTUS_LOG=warn HEPHAESTUS_ADDR="127.0.0.1:$port" \
  "$bin" serve >"$dir/stdout" 2>"$dir/stderr" &
pid=$!
for _ in $(seq 1 300); do curl -sf "$base/health" >/dev/null && break; sleep 0.1; done
HEPHAESTUS_KEY=$(sed -n 's/^admin API key: //p' "$dir/stdout")
export HEPHAESTUS_KEY
post() {
  curl -sf -X POST "$base$1" -H "Authorization: Bearer $HEPHAESTUS_KEY" \
    -H 'Content-Type: application/json' -d "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
product=$(post /api/v1/revenue/products '{"name": "History"}')
PRICE_ID=$(post /api/v1/revenue/prices "{\"product_id\": \"$product\", \"currency\": \"usd\", \"unit_amount\": 10.00}")
export PRICE_ID
new=$(post /api/v1/revenue/customers '{"email": "new@example.com"}')
old=$(post /api/v1/revenue/customers '{"email": "old@example.com"}')
t0=$(date +%s)
# wrk sleeps out its whole duration even once the script has stopped sending: watch the
# stored count and stop it then.
CUSTOMER_ID=$old PAYMENTS=$payments wrk -t1 -c"$conns" -d3600s -s tests/load/pay_n.lua "$base" >/dev/null &
loader=$!
stored=0
for _ in $(seq 1 3600); do
  stored=$(curl -sf "$base/api/v1/revenue/payments/totals" -H "Authorization: Bearer $HEPHAESTUS_KEY" |
    python3 -c 'import json,sys; print(sum(c["payments"] for c in json.load(sys.stdin)["by_currency"]))')
  [ "$stored" -ge "$payments" ] && break
  sleep 1
done
kill "$loader" 2>/dev/null || true
wait "$loader" 2>/dev/null || true
echo "$db: $stored payments for $old in $(( $(date +%s) - t0 )) s"
for round in 1 2 3; do
  for who in new old; do
    id=$new; [ "$who" = old ] && id=$old
    echo "### $db, round $round, quotes for the $who customer (${secs}s, $conns connections)"
    CUSTOMER_ID=$id wrk -t1 -c"$conns" -d"${secs}s" --latency -s tests/load/quote.lua "$base" |
      grep -E 'Requests/sec|^ +50%|^ +99%|non-2xx'
  done
done
