#!/usr/bin/env bash
# Load benchmark for the customer and payment routes, from a separate process (wrk), on SQLite and on
# PostgreSQL. Results go to stdout; record them in BENCHMARKS.md with the machine and date.
#
#   tests/load/api.sh [seconds per run, default 15] [connections, default 32]
#
# Needs wrk (Debian: apt-get install wrk) and a PostgreSQL at BENCH_DATABASE_URL's server
# (default: postgres://postgres@127.0.0.1:5432, database hephaestus_bench, recreated).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-15}"
conns="${2:-32}"
pg_server="${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}"
port=18080
cargo build --release -p hephaestus >/dev/null
bin=target/release/hephaestus

run_db() {
  local label="$1" url="$2" dir
  dir=$(mktemp -d)
  env -u DATABASE_URL ${url:+DATABASE_URL=$url} HEPHAESTUS_DATA_DIR="$dir" HEPHAESTUS_RATE_LIMIT=100000000/s \
    HEPHAESTUS_LOG=warn HEPHAESTUS_ADDR="127.0.0.1:$port" \
    "$bin" serve >"$dir/stdout" 2>"$dir/stderr" &
  local pid=$!
  local up=""
  for _ in $(seq 1 300); do
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null; then up=1; break; fi
    sleep 0.1
  done
  [ -n "$up" ] || { echo "server did not start:"; cat "$dir/stderr"; exit 1; }
  local key
  key=$(sed -n 's/^admin API key: //p' "$dir/stdout")
  export HEPHAESTUS_KEY="$key"

  echo "### $label: POST /api/v1/revenue/customers (${secs}s, $conns connections)"
  wrk -t1 -c"$conns" -d"${secs}s" --latency -s tests/load/create_customer.lua "http://127.0.0.1:$port"
  grep VmHWM /proc/$pid/status

  CUSTOMER_ID=$(curl -sf -X POST "http://127.0.0.1:$port/api/v1/revenue/customers" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d "{\"email\": \"bench-get-$(date +%s%N)@example.com\"}" | sed -n 's/.*"id":"\(cus_[A-Za-z0-9]*\)".*/\1/p')
  export CUSTOMER_ID
  echo "### $label: GET /api/v1/revenue/customers/{id} (${secs}s, $conns connections)"
  wrk -t1 -c"$conns" -d"${secs}s" --latency -s tests/load/get_customer.lua "http://127.0.0.1:$port"
  grep -E 'VmHWM|VmRSS' /proc/$pid/status

  echo "### $label: POST /api/v1/revenue/payments, sandbox gateway (${secs}s, $conns connections)"
  wrk -t1 -c"$conns" -d"${secs}s" --latency -s tests/load/create_payment.lua "http://127.0.0.1:$port"
  grep -E 'VmHWM|VmRSS' /proc/$pid/status

  [ -s "$dir/stderr" ] && { echo "server log:"; cat "$dir/stderr"; }
  kill -TERM "$pid"
  wait "$pid" || true
  rm -rf "$dir"
}

[ "${BENCH_ONLY:-}" = postgres ] || run_db sqlite ""
psql "$pg_server/postgres" -qc 'DROP DATABASE IF EXISTS hephaestus_bench' -c 'CREATE DATABASE hephaestus_bench'
run_db postgres "$pg_server/hephaestus_bench"
