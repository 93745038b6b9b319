"""Hot-reload latency through the real server: rewrite a plugin file with new content and time
until a quote says the new version decided it. Each version is the original component plus a
custom section naming the round (a valid component with a new content hash).

    python3 tests/load/reload.py BASE_URL PLUGIN.wasm CUSTOMER_ID PRICE_ID ROUNDS
"""

import hashlib
import json
import os
import sys
import time
import urllib.request


def custom_section(name: bytes, payload: bytes) -> bytes:
    def leb(n: int) -> bytes:
        out = bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    body = leb(len(name)) + name + payload
    return b"\x00" + leb(len(body)) + body


def main() -> None:
    base, path, customer, price, rounds = sys.argv[1:6]
    key = os.environ["HEPHAESTUS_KEY"]
    original = open(path, "rb").read()
    body = json.dumps({"customer_id": customer, "price_id": price, "quantity": 12}).encode()

    def decided_by() -> str:
        req = urllib.request.Request(
            f"{base}/api/v1/revenue/quotes",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req) as resp:
            return json.load(resp)["decided_by"].get("version") or ""

    samples = []
    for n in range(int(rounds)):
        content = original + custom_section(b"bench-round", f"{n}-{time.time_ns()}".encode())
        version = hashlib.sha256(content).hexdigest()
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(content)
        started = time.perf_counter()
        os.replace(tmp, path)  # the way a deploy writes: one rename
        while decided_by() != version:
            if time.perf_counter() - started > 10:
                sys.exit(f"round {n}: version {version[:12]} not serving after 10 s")
            time.sleep(0.001)
        samples.append((time.perf_counter() - started) * 1000)
        time.sleep(0.3)
    samples.sort()
    p = lambda q: samples[min(len(samples) - 1, max(0, int(len(samples) * q + 0.999) - 1))]
    print(f"reloads: {len(samples)}, p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms, "
          f"min {samples[0]:.0f} ms, max {samples[-1]:.0f} ms")


if __name__ == "__main__":
    main()
