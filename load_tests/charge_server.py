"""A tiny approving charge endpoint, so one-click accepts can be load-tested without a processor.

It stands in for the merchant's `charge_url` (API.md, "The store's charge endpoint"): every POST
is answered 200 `{"charge_id": "ch_..."}` at once, the same id for the same processor idempotency
key. With `--webhook-secret` it also verifies `X-Offer-Signature` and answers 401 to a bad one, as
a real merchant must. Keep-alive HTTP/1.1, one thread per connection: the service keeps a pool.

    python load_tests/charge_server.py --port 8099 [--host 127.0.0.1] [--webhook-secret whsec_...]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The service signs with its clock: tolerate the same skew it tolerates on webhooks.
SIGNATURE_TOLERANCE_S = 300


def signature_ok(header: str | None, body: bytes, secret: str, now: float) -> bool:
    """API.md's `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, checked in constant time."""
    try:
        parts = dict(p.split("=", 1) for p in (header or "").split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - t) > SIGNATURE_TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


class ChargeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the service reuses its connections
    server: ChargeServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        secret = self.server.webhook_secret
        if secret and not signature_ok(
            self.headers.get("X-Offer-Signature"), body, secret, time.time()
        ):
            self._answer(401, {"error": "bad signature"})
            return
        try:
            key = str(json.loads(body).get("idempotency_key") or "")
        except (ValueError, AttributeError):
            self._answer(400, {"error": "not a JSON object"})
            return
        self._answer(200, {"charge_id": self.server.charge_id(key)})

    def _answer(self, status: int, payload: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per charge would cost more than the charge


class ChargeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], webhook_secret: str = "") -> None:
        super().__init__(address, ChargeHandler)
        self.webhook_secret = webhook_secret
        self._ids: dict[str, str] = {}
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def charge_id(self, idempotency_key: str) -> str:
        """One charge per processor idempotency key, as a real processor would."""
        with self._lock:
            if not idempotency_key:
                return f"ch_lt_{next(self._counter)}"
            found = self._ids.get(idempotency_key)
            if found is None:
                found = self._ids[idempotency_key] = f"ch_lt_{next(self._counter)}"
            return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--webhook-secret", default="", help="verify X-Offer-Signature with it")
    args = parser.parse_args(argv)
    server = ChargeServer((args.host, args.port), args.webhook_secret)
    print(f"charge endpoint: http://{args.host}:{args.port}/charge", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
