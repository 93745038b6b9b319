#!/usr/bin/env bash
# Plugin benchmarks through the real server (release build) with every example plugin in its
# folder: start time with a cold and a warm precompiled cache, idle resident memory,
# `POST /api/v1/revenue/quotes` under load from a separate process (wrk), and hot reload
# (file written → a quote decided by the new version) over 20 reloads. Results go to
# stdout; record them in BENCHMARKS.md with the machine and date.
#
#   tests/load/plugins.sh [seconds of load, default 15] [connections, default 32]
#
# Needs wrk (Debian: apt-get install wrk), curl, python3, and the plugins built into
# target/plugins (plugins/build.sh target/plugins). Runs on SQLite (the embedded default).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-15}"
conns="${2:-32}"
port=18081
base="http://127.0.0.1:$port"
cargo build --release -p hephaestus >/dev/null
bin=target/release/hephaestus
[ -f target/plugins/volume-pricing.wasm ] || { echo "run plugins/build.sh target/plugins first" >&2; exit 1; }

dir=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/plugins"
cp target/plugins/*.wasm target/plugins/*.toml "$dir/plugins/"
echo "plugins: $(ls "$dir/plugins"/*.wasm | wc -l) components, $(du -sh "$dir/plugins" | cut -f1)"

# Starts the server; sets pid and prints the time until every plugin in the folder serves.
start() {
  local label="$1" t0 ready="" n
  n=$(ls "$dir/plugins"/*.wasm | wc -l)
  t0=$(date +%s%N)
  env -u DATABASE_URL HEPHAESTUS_DATA_DIR="$dir" HEPHAESTUS_RATE_LIMIT=100000000/s \
    HEPHAESTUS_LOG=warn HEPHAESTUS_ADDR="127.0.0.1:$port" \
    "$bin" serve >>"$dir/stdout" 2>>"$dir/stderr" &
  pid=$!
  for _ in $(seq 1 3000); do
    if [ -n "${HEPHAESTUS_KEY:-}" ] && curl -sf -H "Authorization: Bearer $HEPHAESTUS_KEY" "$base/api/v1/plugins" 2>/dev/null |
      python3 -c "import json,sys; d=json.load(sys.stdin)['data']; sys.exit(0 if sum(p['state']['state']=='active' for p in d)==$n else 1)" 2>/dev/null; then
      ready=1; break
    fi
    if [ -z "${HEPHAESTUS_KEY:-}" ]; then
      HEPHAESTUS_KEY=$(sed -n 's/^admin API key: //p' "$dir/stdout" 2>/dev/null || true)
      export HEPHAESTUS_KEY
    fi
    sleep 0.01
  done
  [ -n "$ready" ] || { echo "server did not load its plugins (is port $port free?):"; cat "$dir/stderr"; exit 1; }
  echo "### $label: every plugin serving $(( ($(date +%s%N) - t0) / 1000000 )) ms after exec"
}
stop() { kill -TERM "$pid"; wait "$pid" || true; }
rss() { grep -E 'VmRSS|VmHWM' "/proc/$pid/status" | tr -s ' \t' ' ' | tr '\n' ' '; echo; }

start "start, empty precompiled cache (every plugin compiled)"
sleep 2
echo "idle after cold start: $(rss)"
stop
start "restart, warm precompiled cache"
sleep 2
echo "idle after warm start: $(rss)"
curl -sf -H "Authorization: Bearer $HEPHAESTUS_KEY" "$base/api/v1/plugins" |
  python3 -c "import json,sys
for p in json.load(sys.stdin)['data']:
    print('  %-28s %-16s cache=%-5s start=%6d us warm=%d' % (p['name'], p['world'], p['from_cache'], p['start_time'], p['warm_instances']))"

post() { curl -sf -X POST "$base$1" -H "Authorization: Bearer $HEPHAESTUS_KEY" -H 'Content-Type: application/json' -d "$2"; }
CUSTOMER_ID=$(post /api/v1/revenue/customers "{\"email\":\"quote-load@example.com\",\"name\":\"Load\",\"metadata\":{\"seats\":\"40\"}}" | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
product=$(post /api/v1/revenue/products '{"name":"Seats"}' | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
PRICE_ID=$(post /api/v1/revenue/prices "{\"product_id\":\"$product\",\"currency\":\"usd\",\"unit_amount\":97.00,\"recurring\":{\"interval\":\"month\"}}" | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
export CUSTOMER_ID PRICE_ID
echo "one quote: $(post /api/v1/revenue/quotes "{\"customer_id\":\"$CUSTOMER_ID\",\"price_id\":\"$PRICE_ID\",\"quantity\":12}")"

echo "### POST /api/v1/revenue/quotes (${secs}s, $conns connections)"
wrk -t1 -c"$conns" -d"${secs}s" --latency -s tests/load/quote.lua "$base"
echo "after load: $(rss)"

echo "### hot reload: file written -> first quote decided by the new version, 20 reloads"
python3 tests/load/reload.py "$base" "$dir/plugins/volume-pricing.wasm" "$CUSTOMER_ID" "$PRICE_ID" 20
[ -s "$dir/stderr" ] && { echo "server log:"; tail -20 "$dir/stderr"; }
stop
