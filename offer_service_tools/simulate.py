"""`offer-service simulate`: synthetic shoppers with known true behaviour, through the real API.

Each visitor asks for offers on a product page or a cart (`GET /v1/offers` with a visitor id),
sends impressions and clicks (`POST /v1/events`), converts with a known probability, buys clicked
offers with a known probability, and places the order through `POST /v1/admin/orders` with its
visitor id (holdout visitors too: they are measured). On the thank-you page (`GET /v1/offers`
with the order and its token) a visitor accepts one-click (`POST /v1/accept`, charged through
the store's charge endpoint) with a known probability. Items are then returned
(`POST /v1/admin/returns`) at known rates. Holdout visitors see no offers; a share of what
treatment visitors buy through offers (`organic_share`) is bought by holdout visitors anyway,
the products they would have been offered, so the true incremental effect is known and can be
zero while the offers still get credit. Afterwards the report (`GET /v1/admin/metrics`) is read
and every true parameter is printed next to its estimate and 95% interval.

The true values are expectations under the behaviour model, given the offers the service
actually showed (which the simulation cannot know in advance: orders change affinity).

A store remembers visitors, orders, events and accepts by id, so every run has ids of its own
(`sim-<run>-<i>`, the run named `<seed>.<random>` unless `--run` names it) and reads the report
of its own time window: a second run against the same store reports on its shoppers alone.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from offer_service_tools.charge_double import ChargeDouble, ServerThread
from offer_service_tools.sim_model import (
    Behaviour,
    OfferSeen,
    Shopper,
    compare,
    format_table,
    truths,
    uniform,
)
from offer_service_tools.sim_support import Api, SimulationError

CHUNK = 2000
EVENTS_PER_BATCH = 80
DEMO_KEYS = ("pk_demo", "sk_demo")


@dataclass
class Simulation:
    """One run: who the shoppers were, what they did, and the report read afterwards."""

    behaviour: Behaviour
    run: str = ""
    shoppers: list[Shopper] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    holdout_offers_seen: int = 0
    failed_accepts: int = 0
    started_ms: int = 0
    finished_ms: int = 0

    cells: dict[tuple[str, tuple[str, ...]], float] = field(default_factory=dict)

    def comparisons(self) -> list[dict[str, Any]]:
        return compare(truths(self.shoppers, self.behaviour, self.cells), self.report)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _offers(body: dict[str, Any]) -> list[OfferSeen]:
    """The offers a simulated shopper may take: single products. The model's shopper clicks and
    then buys the offer's product; a bundle's product is the page's own, which the shopper buys
    anyway, so a bundle is left out of the model (no events are sent for it)."""
    return [
        OfferSeen(o["product_id"], o["offer_price"]["amount"], o["offer_id"], o["token"])
        for o in body.get("offers", [])
        if o["kind"] != "bundle"
    ]


class Simulator:
    """Drives `visitors` synthetic shoppers against a running service."""

    def __init__(
        self,
        api: Api,
        behaviour: Behaviour,
        *,
        visitors: int,
        seed: int,
        run: str,
        chunk: int = CHUNK,
    ) -> None:
        self.api = api
        self.b = behaviour
        self.visitors = visitors
        self.seed = seed
        self.run_name = run
        self.chunk = chunk
        self.sim = Simulation(behaviour, run)
        self.anchors: list[tuple[str, ...]] = []
        self.carts: list[tuple[str, ...]] = []
        self.prices: dict[str, int] = {}
        # Thank-you offers by the order's products, seen by treatment visitors: what a holdout
        # visitor with the same order would have been offered.
        self.thank_you_seen: dict[frozenset[str], list[OfferSeen]] = {}

    async def load_catalog(self) -> None:
        products = await self.api.catalog()
        eligible = sorted(
            (p for p in products if p["active"] and "fee" not in p["flags"] and p["price"] > 0),
            key=lambda p: p["id"],
        )
        if len(eligible) < 2:
            raise SystemExit("error: the store needs at least two active products to simulate")
        rng = random.Random(f"{self.seed}:catalog")
        chosen = rng.sample(eligible, min(len(eligible), 40))
        self.prices = {p["id"]: p["price"] for p in eligible}
        self.anchors = [(p["id"],) for p in chosen]
        self.carts = [
            tuple(sorted(p["id"] for p in rng.sample(chosen, 2))) for _ in range(len(chosen))
        ]
        mix = self.b.surface_mix
        weight = sum(mix.values())
        for surface, pages in (("product_page", self.anchors), ("cart", self.carts)):
            for anchor in pages:
                key = (surface, anchor)
                p = mix.get(surface, 0.0) / weight / len(pages)
                self.sim.cells[key] = self.sim.cells.get(key, 0.0) + p

    async def run(self) -> Simulation:
        await self.load_catalog()
        self.sim.started_ms = _now_ms()
        for start in range(0, self.visitors, self.chunk):
            await self._chunk(range(start, min(start + self.chunk, self.visitors)))
        self.sim.finished_ms = _now_ms()
        return self.sim

    def _shopper(self, i: int) -> Shopper:
        key = f"{self.seed}:{i}"
        surfaces = list(self.b.surface_mix)
        weights = [self.b.surface_mix[s] for s in surfaces]
        u = uniform(f"{key}:surface") * sum(weights)
        surface = surfaces[-1]
        for s, w in zip(surfaces, weights, strict=True):
            if u < w:
                surface = s
                break
            u -= w
        pages = self.anchors if surface == "product_page" else self.carts
        anchor = pages[int(uniform(f"{key}:page") * len(pages))]
        base = [(pid, self.prices[pid]) for pid in anchor]
        return Shopper(i, f"sim-{self.run_name}-{i}", surface, anchor, base, key)

    async def _chunk(self, indices: range) -> None:
        shoppers = [self._shopper(i) for i in indices]
        await self.api.gather(self._ask_offers(s) for s in shoppers)
        would_be = await self._would_be(s for s in shoppers if s.holdout)
        now = _now_ms()
        events: list[dict[str, Any]] = []
        for s in shoppers:
            s.decide(self.b, would_be.get((s.surface, s.anchor), []))
            events.extend(s.pre_purchase_events(now, self.sim.started_ms))
        await self.api.send_events(events, EVENTS_PER_BATCH)
        buyers = [s for s in shoppers if s.converted]
        # The treatment's orders and thank-you pages first: what they were offered is what the
        # holdout's buyers, whose orders follow, would have been offered.
        for group in ([s for s in buyers if not s.holdout], [s for s in buyers if s.holdout]):
            for s in group:
                if s.holdout:
                    s.organic_thank_you(self.b, self._would_be_thank_you(s))
            tokens = await self.api.orders([s.order(_iso(_now_ms())) for s in group])
            for s in group:
                s.order_token = tokens[s.order_id]
            await self.api.gather(self._thank_you(s) for s in group)
        events = [e for s in buyers for e in s.thank_you_events(_now_ms())]
        await self.api.send_events(events, EVENTS_PER_BATCH)
        await self.api.gather(self._accept(s) for s in buyers if s.to_accept)
        events = [e for s in buyers for e in s.accept_events(_now_ms())]
        await self.api.send_events(events, EVENTS_PER_BATCH)
        for s in buyers:
            s.decide_returns(self.b)
        await self.api.gather(
            self.api.returns(s.order_id, s.returned) for s in buyers if s.returned
        )
        self.sim.shoppers.extend(shoppers)

    async def _ask_offers(self, s: Shopper) -> None:
        body = await self.api.offers(s.surface, s.anchor, visitor_id=s.visitor_id)
        s.holdout = bool(body["holdout"])
        s.arm = body.get("experiment")
        s.offers = _offers(body)
        if s.holdout and s.offers:
            self.sim.holdout_offers_seen += len(s.offers)

    async def _would_be(self, holdouts: Any) -> dict[tuple[str, tuple[str, ...]], list[OfferSeen]]:
        """What each holdout visitor's page would have offered: the same request without a
        visitor id (not bucketed, not counted as a visitor)."""
        keys = sorted({(s.surface, s.anchor) for s in holdouts})
        bodies = await self.api.gather(self.api.offers(surface, anchor) for surface, anchor in keys)
        return {key: _offers(body) for key, body in zip(keys, bodies, strict=True)}

    async def _thank_you(self, s: Shopper) -> None:
        body = await self.api.thank_you(s.order_id, s.order_token, s.visitor_id)
        seen = _offers(body)
        if body["holdout"]:
            self.sim.holdout_offers_seen += len(seen)
            return
        s.thank_you_offers = seen
        self.thank_you_seen[s.basket_key()] = seen
        self.thank_you_seen[frozenset(s.anchor)] = seen
        s.decide_thank_you(self.b)

    def _would_be_thank_you(self, s: Shopper) -> list[OfferSeen]:
        """A treatment buyer's thank-you offers for the same order (else for the same page)."""
        seen = self.thank_you_seen.get(s.basket_key())
        return seen if seen is not None else self.thank_you_seen.get(frozenset(s.anchor), [])

    async def _accept(self, s: Shopper) -> None:
        for offer in list(s.to_accept):
            key = f"{s.visitor_id}-{offer.product_id}"
            if await self.api.accept(offer.token, key):
                s.accepted.append(offer)
            else:
                self.sim.failed_accepts += 1


async def simulate(
    url: str,
    *,
    visitors: int,
    seed: int,
    behaviour: Behaviour | None = None,
    publishable_key: str = DEMO_KEYS[0],
    secret_key: str = DEMO_KEYS[1],
    concurrency: int = 24,
    lift_limits: bool = True,
    chunk: int = CHUNK,
    run: str | None = None,
) -> Simulation:
    """Run the simulation and read the report of its own time window. `run` names the run's
    ids (default: a new name); the same seed and run replay the same shoppers."""
    b = behaviour or Behaviour()
    run = run or new_run(seed)
    async with Api(url, publishable_key, secret_key, concurrency) as api:
        rules = await api.rules()
        patched = dict(rules)
        charge: ServerThread | None = None
        if not rules.get("charge_url"):
            # A store without a charge endpoint gets one that approves every charge. The
            # store's webhook secret cannot be read without rotating it, so it is not verified.
            # It listens on loopback: the service must run with OFFER_ALLOW_PRIVATE_CHARGE_URLS=1
            # (the demo does), or the rules are refused (422 bad_charge_url).
            charge = ServerThread(ChargeDouble(id_prefix="ch_sim_"))
            patched["charge_url"] = (await asyncio.to_thread(charge.start)).url
        # Every shopper comes from this one address, hundreds of new visitors a second: the
        # request limits, the event budget and the rate flags are lifted for the run.
        if lift_limits and isinstance(rules.get("rate_limits"), dict):
            patched["rate_limits"] = {k: 1_000_000 for k in rules["rate_limits"]}
        try:
            if patched != rules:
                await api.put_rules(patched)
            simulator = Simulator(api, b, visitors=visitors, seed=seed, run=run, chunk=chunk)
            sim = await simulator.run()
            # From the run's start exactly (its events are stamped no earlier): an earlier
            # run's last seconds are not this one's. The service's clock is taken to agree
            # with this machine's, as NTP keeps them.
            sim.report = await api.report(sim.started_ms, _now_ms() + 5_000)
        finally:
            if patched != rules:
                await api.put_rules(rules)
            if charge is not None:
                await asyncio.to_thread(charge.stop)
    return sim


def new_run(seed: int) -> str:
    """A run name no earlier run against the store has used (with near certainty)."""
    return f"{seed}.{secrets.token_hex(4)}"


RUN_NAME = re.compile(r"[A-Za-z0-9_.]{1,32}")


def run_name(text: str) -> str:
    """`--run`: a short name that fits inside the ids it is part of."""
    if not RUN_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError("1 to 32 letters, digits, '_' or '.'")
    return text


UNREACHABLE = (
    "error: cannot reach the service at {url} ({reason}); start it with `offer-service serve` "
    "or `offer-service demo`, or pass --url"
)


def cmd_simulate(args: argparse.Namespace) -> int:
    try:
        b = Behaviour.from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        sim = asyncio.run(
            simulate(
                args.url,
                visitors=args.visitors,
                seed=args.seed,
                behaviour=b,
                publishable_key=args.key,
                secret_key=args.secret_key,
                concurrency=args.concurrency,
                run=args.run,
            )
        )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(UNREACHABLE.format(url=args.url, reason=reason), file=sys.stderr)
        return 1
    except SimulationError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    rows = sim.comparisons()
    seconds = (sim.finished_ms - sim.started_ms) / 1000
    if args.json:
        out = {
            "visitors": len(sim.shoppers),
            "seconds": seconds,
            "holdout_offers_seen": sim.holdout_offers_seen,
            "failed_accepts": sim.failed_accepts,
            "comparisons": rows,
        }
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(format_table(rows, sim.report) + "\n")
        sys.stdout.write(
            f"{len(sim.shoppers):,} visitors in {seconds:.1f} s (run {sim.run}); offers shown "
            f"to holdout visitors: {sim.holdout_offers_seen}; failed accepts: "
            f"{sim.failed_accepts}\n"
        )
    problem = verdict(rows)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


def verdict(rows: Sequence[dict[str, Any]]) -> str | None:
    """Why the run fails (the reason for exit status 1), or None when every checked true value
    lies inside its interval."""
    checked = [r for r in rows if r["checked"]]
    if not checked:
        return (
            "error: the report has no interval to check: no visitor of this run was counted "
            "in it (is the service's clock far from this machine's?)"
        )
    outside = [r["parameter"] for r in checked if not r["inside"]]
    if not outside:
        return None
    return (
        f"error: {len(outside)} of {len(checked)} true values lie outside their 95% interval "
        f"({', '.join(outside)}); one in twenty does by chance, so rerun with another --seed "
        f"or more --visitors before suspecting the report"
    )


def add_parser(sub: Any) -> None:
    """Register `simulate` on the CLI's subparsers."""
    p = sub.add_parser("simulate", help="drive synthetic shoppers through a running service")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="where the service answers")
    p.add_argument("--visitors", type=int, default=20_000, help="synthetic visitors to run")
    p.add_argument("--seed", type=int, default=1, help="the same seed gives the same choices")
    p.add_argument(
        "--run",
        type=run_name,
        help="name of this run's ids (visitors, orders, events); a store remembers ids, so each "
        "run needs a name of its own (default: a new one)",
    )
    p.add_argument("--key", default=DEMO_KEYS[0], help="publishable key (default: the demo's)")
    p.add_argument("--secret-key", default=DEMO_KEYS[1], help="secret key (default: the demo's)")
    p.add_argument("--concurrency", type=int, default=24, help="requests in flight")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    Behaviour.add_arguments(p)


__all__: Sequence[str] = (
    "Simulation",
    "Simulator",
    "add_parser",
    "cmd_simulate",
    "new_run",
    "simulate",
    "verdict",
)
