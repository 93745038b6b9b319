#!/usr/bin/env bash
# One hostile plugin must not starve the others. Through the real server (release build):
# product B is quoted by volume-pricing, product A by the hostile greedy-spin (its manifest
# asks for a 60 s deadline and 10^18 fuel, then every call loops, or sleeps in a host call
# with MODE=sleep). Measures `POST /api/v1/revenue/quotes` for B with wrk, first alone, then
# while a few clients keep quoting A, and prints how A's quotes were answered and the
# plugin's status. Record the results in BENCHMARKS.md with the machine and date.
#
#   tests/load/plugin_isolation.sh [seconds, default 15] [connections for B, default 8]
#
# Host settings are the defaults (HEPHAESTUS_PLUGIN_MAX_TIMEOUT_MS=1000, 16 concurrent calls
# per plugin) unless set in the environment. Needs wrk, curl, python3 and the plugins built
# into target/plugins (plugins/build.sh target/plugins). Runs on SQLite.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-15}"
conns="${2:-8}"
mode="${MODE:-spin}"
# A's quotes come from a few slow Python clients (each waits A_PAUSE seconds between quotes)
# so that what B loses is what A's plugin takes, not what A's load generator takes.
a_clients="${A_CLIENTS:-4}"
a_pause="${A_PAUSE:-0.1}"
port=18082
base="http://127.0.0.1:$port"
cargo build --release -p hephaestus >/dev/null
bin=target/release/hephaestus
[ -f target/plugins/hostile/greedy-spin.wasm ] || { echo "run plugins/build.sh target/plugins first" >&2; exit 1; }

dir=$(mktemp -d)
trap 'kill "${pid:-}" "${apid:-}" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/plugins"
env -u DATABASE_URL HEPHAESTUS_DATA_DIR="$dir" HEPHAESTUS_RATE_LIMIT=100000000/s \
  HEPHAESTUS_LOG=warn HEPHAESTUS_ADDR="127.0.0.1:$port" \
  "$bin" serve >"$dir/stdout" 2>"$dir/stderr" &
pid=$!
for _ in $(seq 1 1000); do
  HEPHAESTUS_KEY=$(sed -n 's/^admin API key: //p' "$dir/stdout" 2>/dev/null || true)
  [ -n "$HEPHAESTUS_KEY" ] && curl -sf "$base/health" >/dev/null 2>&1 && break
  sleep 0.02
done
[ -n "$HEPHAESTUS_KEY" ] || { echo "server did not start:"; cat "$dir/stderr"; exit 1; }
export HEPHAESTUS_KEY

post() { curl -sf -X POST "$base$1" -H "Authorization: Bearer $HEPHAESTUS_KEY" -H 'Content-Type: application/json' -d "$2"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
CUSTOMER_ID=$(post /api/v1/revenue/customers '{"email":"isolation@example.com","name":"Load"}' | field id)
product_a=$(post /api/v1/revenue/products '{"name":"Product A"}' | field id)
product_b=$(post /api/v1/revenue/products '{"name":"Product B"}' | field id)
price_a=$(post /api/v1/revenue/prices "{\"product_id\":\"$product_a\",\"currency\":\"usd\",\"unit_amount\":10.00}" | field id)
price_b=$(post /api/v1/revenue/prices "{\"product_id\":\"$product_b\",\"currency\":\"usd\",\"unit_amount\":97.00}" | field id)

sed "s/^world = \"pricing\"/world = \"pricing\"\nproducts = [\"$product_b\"]/" \
  target/plugins/volume-pricing.toml >"$dir/plugins/volume-pricing.toml"
cp target/plugins/volume-pricing.wasm "$dir/plugins/"
sed -e "s/^world = \"pricing\"/world = \"pricing\"\nproducts = [\"$product_a\"]/" \
  -e "s/^mode = .*/mode = \"$mode\"/" \
  target/plugins/hostile/greedy-spin.toml >"$dir/plugins/greedy-spin.toml"
cp target/plugins/hostile/greedy-spin.wasm "$dir/plugins/"
for _ in $(seq 1 1000); do
  curl -sf -H "Authorization: Bearer $HEPHAESTUS_KEY" "$base/api/v1/plugins" |
    python3 -c "import json,sys; d=json.load(sys.stdin)['data']; sys.exit(0 if sum(p['state']['state']=='active' for p in d)==2 else 1)" 2>/dev/null && break
  sleep 0.02
done
status() {
  curl -sf -H "Authorization: Bearer $HEPHAESTUS_KEY" "$base/api/v1/plugins" | python3 -c "import json,sys
for p in json.load(sys.stdin)['data']:
    print('  %-15s state=%-8s calls=%-6d faults=%-4d busy=%-4d in_flight=%d limits=%s warnings=%d' % (p['name'], p['state']['state'], p['calls'], p['faults'], p['busy'], p['in_flight'], p['limits'], len(p['warnings'])))"
}
echo "plugins loaded (greedy-spin mode=$mode):"
status

export CUSTOMER_ID PRICE_ID="$price_b"
echo "### B alone: POST /api/v1/revenue/quotes for product B (${secs}s, $conns connections)"
wrk -t1 -c"$conns" -d"${secs}s" --latency -s tests/load/quote.lua "$base"

echo "### B while $a_clients clients keep quoting product A, ${a_pause}s apart (greedy-spin, mode=$mode)"
python3 - "$base" "$HEPHAESTUS_KEY" "$CUSTOMER_ID" "$price_a" "$a_clients" "$((secs + 2))" "$a_pause" >"$dir/a.txt" <<'EOF' &
import collections, json, sys, threading, time, urllib.request
base, key, customer, price, clients, secs, pause = sys.argv[1:8]
body = json.dumps({"customer_id": customer, "price_id": price, "quantity": 1}).encode()
stop = time.monotonic() + float(secs)
reasons, lock, slowest = collections.Counter(), threading.Lock(), [0.0]
def client():
    while time.monotonic() < stop:
        req = urllib.request.Request(base + "/api/v1/revenue/quotes", data=body, method="POST",
            headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                d = json.load(r)["decided_by"]
                label = d["kind"] + ":" + (d.get("reason") or d.get("plugin") or "")
        except Exception as e:
            label = "error:" + type(e).__name__
        took = time.monotonic() - t0
        with lock:
            reasons[label] += 1
            slowest[0] = max(slowest[0], took)
        time.sleep(float(pause))
threads = [threading.Thread(target=client) for _ in range(int(clients))]
for t in threads: t.start()
for t in threads: t.join()
print("  A's quotes:", dict(reasons), "slowest %.0f ms" % (slowest[0] * 1000))
EOF
apid=$!
sleep 0.5
wrk -t1 -c"$conns" -d"${secs}s" --latency -s tests/load/quote.lua "$base"
wait "$apid" || true
cat "$dir/a.txt"
echo "plugin status after:"
status
echo "server: $(grep -E 'VmRSS|VmHWM' "/proc/$pid/status" | tr -s ' \t' ' ' | tr '\n' ' ')"
kill -TERM "$pid"; wait "$pid" || true
