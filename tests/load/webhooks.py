#!/usr/bin/env python3
"""Writes N signed Stripe events (one per line: signature TAB payload) for webhooks.lua.

    tests/load/webhooks.py N SECRET > events.tsv

Each event has its own id, so every delivery is new work for the inbox. The events are
`charge.refund.updated` for refunds the host does not know: the worker looks each up and
finishes it in one pass (an event about an unknown *payment* would instead be retried with
backoff, in case it beat the payment's own commit). Signed with the
standard library's HMAC exactly as Stripe signs (t.payload, SHA-256); generate right before
the run, since signatures expire after 300 s.
"""
import hashlib
import hmac
import json
import sys
import time
import uuid

n, secret = int(sys.argv[1]), sys.argv[2].encode()
now = int(time.time())
run = uuid.uuid4().hex[:8]
out = sys.stdout
for i in range(n):
    payload = json.dumps({
        "id": f"evt_load_{run}_{i}",
        "object": "event",
        "created": now,
        "type": "charge.refund.updated",
        "data": {"object": {"id": f"re_load_{run}_{i}", "object": "refund", "status": "succeeded"}},
    }, separators=(",", ":"))
    sig = hmac.new(secret, f"{now}.{payload}".encode(), hashlib.sha256).hexdigest()
    out.write(f"t={now},v1={sig}\t{payload}\n")
