#!/usr/bin/env bash
# Load benchmark for the customer and payment routes, from a separate process (wrk), on SQLite and on
# PostgreSQL. Results go to stdout; record them in BENCHMARKS.md with the machine and date.
#
#   tests/load/api.sh [seconds per run, default 15] [connections, default 32]
#   BENCH_ROUTES="payments webhooks" tests/load/api.sh …   # only these (of: customers get payments webhooks)
#   BENCH_ONLY=postgres tests/load/api.sh …                # only PostgreSQL
#   BENCH_WEBHOOK_WORKER=off tests/load/api.sh …           # the server only stores webhook events (an ingest host)
#
# Needs wrk (Debian: apt-get install wrk), sqlite3, psql, bc, python3, and a PostgreSQL at BENCH_DATABASE_URL's server
# (default: postgres://postgres@127.0.0.1:5432, database hephaestus_bench, recreated).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-15}"
conns="${2:-32}"
pg_server="${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}"
port=18080
# BENCH_BIN runs another build (an older one, to compare on the same machine the same hour).
bin="${BENCH_BIN:-target/release/hephaestus}"
[ -n "${BENCH_BIN:-}" ] || cargo build --release -p hephaestus >/dev/null

run_db() {
  # shellcheck disable=SC2317
  local label="$1" url="$2" dir
  dir=$(mktemp -d)
  env -u DATABASE_URL ${url:+DATABASE_URL=$url} STRIPE_WEBHOOK_SECRET=whsec_load HEPHAESTUS_DATA_DIR="$dir" HEPHAESTUS_RATE_LIMIT=100000000/s \
    ${BENCH_WEBHOOK_WORKER:+HEPHAESTUS_WEBHOOK_WORKER=$BENCH_WEBHOOK_WORKER} \
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

  if wanted customers; then
  echo "### $label: POST /api/v1/revenue/customers (${secs}s, $conns connections)"
  wrk -t1 -c"$conns" -d"${secs}s" --latency -s tests/load/create_customer.lua "http://127.0.0.1:$port"
  grep VmHWM /proc/$pid/status
  fi

  CUSTOMER_ID=$(curl -sf -X POST "http://127.0.0.1:$port/api/v1/revenue/customers" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d "{\"email\": \"bench-get-$(date +%s%N)@example.com\"}" | sed -n 's/.*"id":"\(cus_[A-Za-z0-9]*\)".*/\1/p')
  export CUSTOMER_ID
  if wanted get; then
  echo "### $label: GET /api/v1/revenue/customers/{id} (${secs}s, $conns connections)"
  wrk -t1 -c"$conns" -d"${secs}s" --latency -s tests/load/get_customer.lua "http://127.0.0.1:$port"
  grep -E 'VmHWM|VmRSS' /proc/$pid/status
  fi

  if wanted payments; then
  echo "### $label: POST /api/v1/revenue/payments, sandbox gateway (${secs}s, $conns connections)"
  wrk -t1 -c"$conns" -d"${secs}s" --latency -s tests/load/create_payment.lua "http://127.0.0.1:$port"
  grep -E 'VmHWM|VmRSS' /proc/$pid/status
  fi

  wanted webhooks || { stop_server "$pid" "$dir"; return; }
  # More events than the run can send, so every delivery is a new event.
  python3 tests/load/webhooks.py $((secs * 30000)) whsec_load > "$dir/events.tsv"
  echo "### $label: POST /api/v1/revenue/webhooks/stripe, verified new events (${secs}s, $conns connections)"
  EVENTS_FILE="$dir/events.tsv" wrk -t1 -c"$conns" -d"${secs}s" --latency -s tests/load/webhooks.lua "http://127.0.0.1:$port"
  grep -E 'VmHWM|VmRSS' /proc/$pid/status
  # The worker applies stored events in the background; time how long it takes to catch up.
  local start pending
  if [ "${BENCH_WEBHOOK_WORKER:-on}" = off ]; then
    pending=$(pending_events)
    echo "stored for other hosts' workers: $pending events pending"
    stop_server "$pid" "$dir"
    return
  fi
  start=$(date +%s.%N)
  for _ in $(seq 1 1200); do
    pending=$(pending_events)
    [ "$pending" = 0 ] && break
    sleep 0.1
  done
  echo "webhook backlog drained $(echo "$(date +%s.%N) - $start" | bc) s after the load ended (pending: $pending)"

  stop_server "$pid" "$dir"
}

# Events the inbox holds that no worker has applied yet (url and dir: run_db's).
pending_events() {
  local count="SELECT COUNT(*) FROM webhook_events WHERE status = 'pending'"
  if [ -n "$url" ]; then psql "$url" -tAc "$count"; else sqlite3 "$dir/hephaestus.db" "$count"; fi
}

wanted() { [[ " ${BENCH_ROUTES:-customers get payments webhooks} " == *" $1 "* ]]; }

stop_server() {
  [ -s "$2/stderr" ] && { echo "server log:"; cat "$2/stderr"; }
  kill -TERM "$1"
  wait "$1" || true
  rm -rf "$2"
}

[ "${BENCH_ONLY:-}" = postgres ] || run_db sqlite ""
psql "$pg_server/postgres" -qc 'DROP DATABASE IF EXISTS hephaestus_bench' -c 'CREATE DATABASE hephaestus_bench'
run_db postgres "$pg_server/hephaestus_bench${BENCH_PG_QUERY:-}"
