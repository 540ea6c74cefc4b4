"""CPU per request type of the Locust suite's production mix, measured on a real `serve` process.

The Locust mix (locustfile.py) gives a process's CPU for all its requests together; this sends
each request type on its own, one request at a time over one keep-alive connection, and reads
the process's CPU time (/proc/<pid>/stat) around each phase, less what the process spends idle
(its background loops) over as long. The types: a warm product page (a popular product whose
offer list is prepared; a visitor of the mix's, 40% logged in), a cold product page (a product
never asked), a cold cart and a cold checkout (a new set of 1-3 items of a real basket, the
normal case for carts), a thank-you page (a fresh order), an events batch (10 impressions and
clicks of offers shown) and a one-click accept (the store's charge endpoint approves).

    python load_tests/mix_cpu.py --host http://127.0.0.1:8000 --pid <serve pid> \
        --store-json store.json --charge-url http://127.0.0.1:8099/charge [--profile DIR]

The store must hold the Online Retail data set (run_slo.py --import-orders, or `offer-service
import orders`); `serve` must trust the proxy (OFFER_TRUST_PROXY=1: every shopper has its own
address) and allow a private charge URL (OFFER_ALLOW_PRIVATE_CHARGE_URLS=1). With `--profile`,
py-spy samples the process during each phase into DIR/<type>.txt (collapsed stacks).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import httpx  # noqa: E402
import orjson  # noqa: E402
import workload as wl  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
LOGGED_IN_SHARE = 0.4
WARM_PRODUCTS = 30
VISITORS = 200
ORDER_BATCH = 400
EVENTS_PER_BATCH = 10
IDLE_S = 5.0
# The mix's shares (locustfile.py); product pages counted warm, as nearly all are at steady state.
MIX = {
    "product_warm": 55,
    "cart_cold": 20,
    "checkout_cold": 8,
    "thank_you": 5,
    "events": 10,
    "accept": 2,
}


def cpu_s(pid: int, *, system: bool = False) -> float:
    """The process's CPU time: user and system, or (`system`) the kernel's part alone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (stime if system else utime + stime) / TICKS


class Mix:
    def __init__(self, args: argparse.Namespace) -> None:
        keys = json.loads(Path(args.store_json).read_text())
        self.host, self.pk, self.sk = (
            args.host.rstrip("/"),
            keys["publishable_key"],
            keys["secret_key"],
        )
        self.pid, self.n, self.profile = args.pid, args.requests, args.profile
        self.rng = random.Random(args.seed)
        work = wl.from_dataset(Path(args.dataset))
        self.work = work.restricted_to(wl.catalog_ids(self.host, self.sk))
        self.picker = wl.Picker(self.work, self.rng)
        self.client = httpx.Client(base_url=self.host, timeout=30)
        customers = self.work.customers
        self.visitors = [
            (f"mix-v-{uuid.uuid4().hex[:12]}", self.rng.choice(customers))
            if self.rng.random() < LOGGED_IN_SHARE
            else (f"mix-v-{uuid.uuid4().hex[:12]}", None)
            for _ in range(VISITORS)
        ]
        self.shown: list[tuple[str, str]] = []  # (visitor, token) of offers shown
        self.thank_you_offers: list[str] = []
        if args.charge_url:
            rules = self.admin("GET", "/v1/admin/rules")
            rules["charge_url"] = args.charge_url
            self.admin("PUT", "/v1/admin/rules", rules)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        return wl.admin_call(self.host, self.sk, method, path, data)

    def headers(self) -> dict[str, str]:
        octets = ".".join(str(self.rng.randrange(1, 255)) for _ in range(3))
        return {"X-Forwarded-For": f"10.{octets}", "User-Agent": "Mozilla/5.0 (mix_cpu)"}

    def offers(self, surface: str, **params: str) -> None:
        visitor, customer = self.rng.choice(self.visitors)
        query = {"key": self.pk, "surface": surface, **params}
        if surface != "thank_you":
            query["visitor_id"] = visitor
            if customer:
                query["customer_id"] = customer
        r = self.client.get("/v1/offers", params=query, headers=self.headers())
        if r.status_code != 200:
            raise SystemExit(f"{surface}: {r.status_code} {r.text[:300]}")
        shown = r.json()["offers"]
        if surface == "thank_you":
            # One accept per order, as the mix makes.
            self.thank_you_offers.extend(offer["token"] for offer in shown[:1])
        else:
            self.shown.extend((visitor, offer["token"]) for offer in shown)

    def post_orders(self, count: int) -> list[tuple[str, str]]:
        placed = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        prefix = "mix-" + uuid.uuid4().hex[:8]
        orders = [
            {
                "id": f"{prefix}-{n}",
                "placed_at": placed,
                "currency": "GBP",
                "lines": [{"product_id": self.picker.product(), "quantity": 1, "price": 100}],
            }
            for n in range(count)
        ]
        tokens: dict[str, str] = {}
        for start in range(0, count, ORDER_BATCH):
            answer = self.admin("POST", "/v1/admin/orders", orders[start : start + ORDER_BATCH])
            tokens.update(answer["order_tokens"])
        return list(tokens.items())

    def events(self) -> None:
        visitor = self.rng.choice(self.visitors)[0]
        now = int(time.time() * 1000)
        batch = []
        for _, token in self.rng.sample(self.shown, EVENTS_PER_BATCH):
            kind = "click" if self.rng.random() < 0.2 else "impression"
            batch.append(
                {
                    "id": uuid.uuid4().hex,
                    "type": kind,
                    "token": token,
                    "ts": now,
                    "visitor_id": visitor,
                }
            )
        payload = orjson.dumps({"key": self.pk, "events": batch})
        headers = {**self.headers(), "Content-Type": "text/plain;charset=UTF-8"}
        r = self.client.post("/v1/events", content=payload, headers=headers)
        if r.status_code != 202:
            raise SystemExit(f"events: {r.status_code} {r.text[:300]}")

    def accept(self, token: str) -> None:
        headers = {**self.headers(), "Idempotency-Key": uuid.uuid4().hex}
        r = self.client.post(
            f"/v1/accept?key={self.pk}", json={"token": token, "quantity": 1}, headers=headers
        )
        if r.status_code not in (200, 202):
            raise SystemExit(f"accept: {r.status_code} {r.text[:300]}")

    def phase(self, name: str, calls: list[Callable[[], None]]) -> tuple[float, float]:
        """CPU ms per request of the process over `calls`, less its idle rate, and of it the
        kernel's share (sockets)."""
        spy = None
        if self.profile:
            out = Path(self.profile) / f"{name}.txt"
            spy = subprocess.Popen(
                [
                    PY_SPY,
                    "record",
                    "--pid",
                    str(self.pid),
                    "--rate",
                    "500",
                    "--format",
                    "raw",
                    "-o",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        started, before = time.monotonic(), cpu_s(self.pid)
        kernel = cpu_s(self.pid, system=True)
        for call in calls:
            call()
        used, wall = cpu_s(self.pid) - before, time.monotonic() - started
        kernel = cpu_s(self.pid, system=True) - kernel
        if spy is not None:
            spy.send_signal(2)
            spy.wait()
        per_request = max(0.0, used - self.idle_rate * wall) / len(calls) * 1000
        return per_request, kernel / max(used, 1e-9)

    def run(self) -> dict[str, tuple[float, float]]:
        n, rng = self.n, self.rng
        orders = self.post_orders(n)
        time.sleep(2.0)  # the new orders' version bump reaches the process
        before = cpu_s(self.pid)
        time.sleep(IDLE_S)
        self.idle_rate = (cpu_s(self.pid) - before) / IDLE_S
        popular = sorted(range(len(self.work.products)), key=lambda i: -self.work.weights[i])
        warm = [self.work.products[i] for i in popular[:WARM_PRODUCTS]]
        for product in warm:
            self.offers("product_page", product_id=product)
        cold = [self.work.products[i] for i in popular[WARM_PRODUCTS:]]
        rng.shuffle(cold)
        carts: list[str] = []
        seen: set[str] = set()
        while len(carts) < 2 * n:
            cart = ",".join(sorted(self.picker.cart()))
            if cart not in seen:
                seen.add(cart)
                carts.append(cart)
        figures = {
            "product_warm": self.phase(
                "product_warm",
                [
                    lambda p=p: self.offers("product_page", product_id=p)
                    for p in rng.choices(warm, k=n)
                ],
            ),
            "product_cold": self.phase(
                "product_cold",
                [lambda p=p: self.offers("product_page", product_id=p) for p in cold[:n]],
            ),
            "cart_cold": self.phase(
                "cart_cold", [lambda c=c: self.offers("cart", items=c) for c in carts[:n]]
            ),
            "checkout_cold": self.phase(
                "checkout_cold", [lambda c=c: self.offers("checkout", items=c) for c in carts[n:]]
            ),
            "thank_you": self.phase(
                "thank_you",
                [
                    lambda o=o, t=t: self.offers("thank_you", order_id=o, order_token=t)
                    for o, t in orders
                ],
            ),
            "events": self.phase("events", [self.events for _ in range(n)]),
        }
        accepts = self.thank_you_offers[:n]
        figures["accept"] = self.phase("accept", [lambda t=t: self.accept(t) for t in accepts])
        total = sum(MIX.values())
        mix = sum(figures[k][0] * share for k, share in MIX.items()) / total
        kernel = sum(figures[k][0] * figures[k][1] * share for k, share in MIX.items()) / total
        figures["mix"] = (mix, kernel / mix)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--pid", type=int, required=True, help="the serve process's pid")
    parser.add_argument("--store-json", required=True)
    parser.add_argument("--charge-url", help="point the store's charge_url here for accepts")
    parser.add_argument("--dataset", default=str(wl.DEFAULT_DATASET))
    parser.add_argument("--requests", type=int, default=300, help="per request type")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", help="py-spy each phase into this directory")
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    figures = Mix(args).run()
    print(f"{'request type':<16} {'CPU ms per request':>18} {'of it in the kernel':>20}")
    for name, (ms, kernel) in figures.items():
        print(f"{name:<16} {ms:>18.2f} {kernel:>20.0%}")


if __name__ == "__main__":
    main()
