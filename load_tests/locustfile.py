"""Shoppers for Locust: the production mix of offer surfaces, event batches and one-click accepts.

Each simulated user, about once a second, acts for one of the open shopping sessions
(workload.Traffic: a visitor out of a million, 40% also a logged-in real customer, a few page
views each, spread over minutes): a product page (55% of requests), a cart (20%), a checkout
(8%), a thank-you page (5%), an event batch of what a session's pages saw (10%) or a one-click
accept of a thank-you offer (2%). Products, carts and customers come from the Online Retail
data set (see workload.py), so the service answers from real affinity. Every answer is
validated with the service's own models (`OffersResponse`, `EventsResponse`, `AcceptResponse`,
`Health`) and with the invariants any answer must keep (no more offers than asked, ranks in
order, nothing already in the cart).

Options (also as environment variables): `--offer-key` (OFFER_KEY, default pk_demo),
`--offer-secret-key` (OFFER_SECRET_KEY, default sk_demo: needed for thank-you pages and accepts,
which need orders; without it those two are left out of the mix), `--offer-dataset`,
`--offer-charge-url` (point the store's charge endpoint there for the test, then restore it; an
http:// or private one needs OFFER_ALLOW_PRIVATE_CHARGE_URLS=1 on the service) and
`--offer-think` (mean seconds between a user's requests), `--offer-population`,
`--offer-sessions` and `--offer-views` (the sessions: visitors, open at once, mean page
views). The shape comes from shapes.py via OFFER_SHAPE. Run it through run_slo.py, or directly:

    OFFER_SHAPE=smoke locust -f load_tests/locustfile.py --headless --host http://127.0.0.1:8000
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import gevent.lock
import orjson
import shapes
import workload as wl
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopUser
from pydantic import BaseModel, ValidationError

from offer_service.domain.surfaces import SURFACES, Surface
from offer_service.web.models import (
    AcceptResponse,
    ErrorResponse,
    EventsResponse,
    Health,
    OffersResponse,
)

log = logging.getLogger("offer_load")

M = TypeVar("M", bound=BaseModel)

# Requests are grouped under these names in Locust's statistics and CSVs.
NAMES = {
    Surface.PRODUCT_PAGE: "/v1/offers?surface=product_page",
    Surface.CART: "/v1/offers?surface=cart",
    Surface.CHECKOUT: "/v1/offers?surface=checkout",
    Surface.THANK_YOU: "/v1/offers?surface=thank_you",
}
EVENTS_NAME = "/v1/events"
ACCEPT_NAME = "/v1/accept"
HEALTH_NAME = "/healthz"

LOGGED_IN_SHARE = 0.4
# Sessions open at once per Locust process: at 50 users and a request a second each, a
# session's page views are about 40 s apart (workload.Traffic).
SESSIONS_OPEN = 2_000
CLICK_SHARE = 0.03  # of impressions, about what storefront widgets see
BATCH_MAX = 20  # events per beacon; the snippet flushes on page hide
PENDING_MAX = 100
# Orders the thank-you pages and accepts use: posted in batches under the service's bulk
# threshold (500), one line each, so a refill costs one version bump and no affinity recount.
ORDER_BATCH = 400
ORDER_REFILL_BELOW = 50
# Accept is open for an order's first hour; retire pool orders well before that.
ORDER_MAX_AGE_S = 40 * 60


# --- options and per-process state ---------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("offer service")
    group.add_argument("--offer-key", env_var="OFFER_KEY", default="pk_demo")
    group.add_argument("--offer-secret-key", env_var="OFFER_SECRET_KEY", default="sk_demo")
    group.add_argument("--offer-dataset", env_var="OFFER_DATASET", default=str(wl.DEFAULT_DATASET))
    group.add_argument("--offer-charge-url", env_var="OFFER_CHARGE_URL", default="")
    group.add_argument("--offer-think", env_var="OFFER_THINK", type=float, default=1.0)
    traffic = wl.Traffic()
    group.add_argument(
        "--offer-population", env_var="OFFER_POPULATION", type=int, default=traffic.population
    )
    group.add_argument(
        "--offer-sessions", env_var="OFFER_SESSIONS", type=int, default=SESSIONS_OPEN
    )
    group.add_argument("--offer-views", env_var="OFFER_VIEWS", type=float, default=traffic.views)


class Shared:
    """What every shopper of this process shares: the workload, the order pool, and the
    thank-you offers waiting for a one-click accept."""

    host = ""
    key = ""
    secret_key = ""
    picker: wl.Picker
    sessions: SessionPool
    orders: OrderPool | None = None
    # (order_id, token) of thank-you offers shown, newest last.
    acceptable: deque[tuple[str, str]] = deque(maxlen=1000)
    saved_charge_url: tuple[bool, str | None] = (False, None)


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None or environment.host is None:
        return
    Shared.host = environment.host.rstrip("/")
    Shared.key = options.offer_key
    Shared.secret_key = options.offer_secret_key
    workload = wl.from_dataset(Path(options.offer_dataset))
    if Shared.secret_key:
        try:
            catalog = wl.catalog_ids(Shared.host, Shared.secret_key)
        except wl.AdminError as exc:
            raise SystemExit(f"cannot read the store's catalog: {exc}") from None
        workload = workload.restricted_to(catalog)
        if not workload.products:
            raise SystemExit(
                "the store's catalog holds none of the data set's products: import it first "
                "(run_slo.py --import-orders, or offer-service import orders)"
            )
        Shared.orders = OrderPool(workload)
    else:
        # Thank-you pages need an order and its token; orders need the secret key.
        Shopper.tasks = [t for t in Shopper.tasks if t not in (Shopper.thank_you, Shopper.accept)]
        log.warning("no secret key: thank-you pages and one-click accepts are left out")
    Shared.picker = wl.Picker(workload)
    traffic = wl.Traffic(
        population=options.offer_population,
        sessions=options.offer_sessions,
        views=options.offer_views,
        prefix="lt-v-",
    )
    Shared.sessions = SessionPool(traffic)
    think = options.offer_think
    Shopper.wait_time = between(think * 0.5, think * 1.5)


@events.test_start.add_listener
def _point_charge_url(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None or not options.offer_charge_url or not Shared.secret_key:
        return
    rules = wl.admin_call(Shared.host, Shared.secret_key, "GET", "/v1/admin/rules")
    Shared.saved_charge_url = (True, rules.get("charge_url"))
    rules["charge_url"] = options.offer_charge_url
    wl.admin_call(Shared.host, Shared.secret_key, "PUT", "/v1/admin/rules", orjson.dumps(rules))


@events.test_stop.add_listener
def _restore_charge_url(environment: Environment, **_: Any) -> None:
    saved, url = Shared.saved_charge_url
    if not saved:
        return
    rules = wl.admin_call(Shared.host, Shared.secret_key, "GET", "/v1/admin/rules")
    rules["charge_url"] = url
    wl.admin_call(Shared.host, Shared.secret_key, "PUT", "/v1/admin/rules", orjson.dumps(rules))
    Shared.saved_charge_url = (False, None)


class OrderPool:
    """Fresh orders (id, order token) for thank-you pages, each accepted at most once.

    Real thank-you pages follow real orders; posting one per page would turn 5% of the load
    into order webhooks (each bumps the store version and so every cached offer list), which is
    not the mix under test. Orders are posted in batches, off the statistics, when few are left
    or the oldest near the end of their accept window.
    """

    def __init__(self, workload: wl.Workload) -> None:
        self.products = workload.products
        self.weights = workload.weights
        self.fresh: list[tuple[str, str, float]] = []  # (order id, token, posted at)
        self.lock = gevent.lock.Semaphore()
        self.prefix = "lt-" + uuid.uuid4().hex[:8]
        self.count = 0

    def take(self) -> tuple[str, str]:
        now = time.monotonic()
        with self.lock:
            self.fresh = [o for o in self.fresh if now - o[2] < ORDER_MAX_AGE_S]
            if len(self.fresh) < ORDER_REFILL_BELOW:
                self._refill(now)
            order_id, token, _ = random.choice(self.fresh)
        return order_id, token

    def retire(self, order_id: str) -> None:
        self.fresh = [o for o in self.fresh if o[0] != order_id]

    def _refill(self, now: float) -> None:
        placed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        chosen = random.choices(self.products, weights=self.weights, k=ORDER_BATCH)
        orders = []
        for product_id in chosen:
            self.count += 1
            orders.append(
                {
                    "id": f"{self.prefix}-{self.count}",
                    "placed_at": placed_at,
                    "currency": "GBP",
                    "lines": [{"product_id": product_id, "quantity": 1, "price": 100}],
                }
            )
        answer = wl.admin_call(
            Shared.host, Shared.secret_key, "POST", "/v1/admin/orders", orjson.dumps(orders)
        )
        tokens: dict[str, str] = answer["order_tokens"]
        self.fresh.extend((oid, token, now) for oid, token in tokens.items())


# --- checking answers -----------------------------------------------------------------------------


def _error_code(content: bytes | None) -> str:
    try:
        code: str = ErrorResponse.model_validate_json(content or b"").error.code
        return code
    except ValidationError:
        return (content or b"")[:120].decode("utf-8", "replace")


def _parsed(response: Any, model: type[M], status: int) -> M | None:
    """The body as `model`, or None after marking the request failed (status, code, field)."""
    if response.status_code != status:
        response.failure(f"{response.status_code} {_error_code(response.content)}")
        return None
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        response.failure(f"not a valid {model.__name__}: {where}: {first['msg']}")
        return None


def _offers_problem(body: OffersResponse, surface: Surface, anchors: list[str]) -> str | None:
    """The first promise this offers answer breaks, if any."""
    if body.surface != surface:
        return f"asked for {surface.value}, answered {body.surface.value}"
    if body.limit > SURFACES[surface].hard_max or len(body.offers) > body.limit:
        return f"{len(body.offers)} offers, limit {body.limit}"
    if body.holdout and body.offers:
        return "offers for a visitor in the holdout"
    if [o.rank for o in body.offers] != list(range(1, len(body.offers) + 1)):
        return "ranks are not 1..n"
    # A bundle is the viewed product with its complements: what it offers is the complements.
    products = [
        p
        for o in body.offers
        for p in ([i.product_id for i in o.items[1:]] if o.items else [o.product_id])
    ]
    if len(set(products)) != len(products):
        return "the same product twice"
    if set(products) & set(anchors):
        return "offers a product the shopper already has"
    return None


# --- sessions -------------------------------------------------------------------------------------


class Session:
    """One visitor's visit: who it is, the address it comes from, and the events its pages
    saw that the snippet has not sent yet."""

    def __init__(self, visitor_id: str) -> None:
        # Each visit has its own address. A deployment behind a proxy it trusts
        # (OFFER_TRUST_PROXY=1) then rate-limits shoppers one by one, as in production.
        self.visitor_id = visitor_id
        self.customer_id = Shared.picker.customer() if random.random() < LOGGED_IN_SHARE else None
        self.headers = {"X-Forwarded-For": f"10.{_octet()}.{_octet()}.{_octet()}"}
        self.pending: deque[dict[str, Any]] = deque(maxlen=PENDING_MAX)
        self.last_token: str | None = None

    def event(self, kind: str, token: str, ts: int) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "type": kind,
            "token": token,
            "ts": ts,
            "visitor_id": self.visitor_id,
        }


class SessionPool:
    """The open sessions of a workload.Traffic model: a page view goes to one at random, and a
    session that ends gives its place to a new visitor of the population (its unsent events
    are sent by the next beacon, as the snippet flushes them when the page is hidden)."""

    def __init__(self, traffic: wl.Traffic) -> None:
        self.choose = wl.Sessions(traffic)
        self.open: dict[str, Session] = {}
        self.ended: deque[Session] = deque(maxlen=PENDING_MAX)

    def view(self) -> Session:
        """The session of the next page view."""
        slot = random.randrange(len(self.choose.open))
        visitor = self.choose.traffic.visitor(self.choose.open[slot])
        session = self.open.get(visitor) or self.open.setdefault(visitor, Session(visitor))
        if random.random() * self.choose.traffic.views < 1.0:
            self.choose.open[slot] = random.randrange(self.choose.traffic.population)
            del self.open[visitor]
            self.ended.append(session)
        return session

    def beacon(self) -> Session:
        """A session with events to send: an ended one first, else the next page view's."""
        while self.ended:
            session = self.ended.popleft()
            if session.pending:
                return session
        return self.view()


# --- the shopper ----------------------------------------------------------------------------------


class Shopper(FastHttpUser):
    """One visitor browsing a store that embeds the offers snippet."""

    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        # Each shopper has its own address. A deployment behind a proxy it trusts
        # (OFFER_TRUST_PROXY=1) then rate-limits shoppers one by one, as in production; one
        # that does not trust it sees every shopper at the load generator's address.
        self.headers = {"X-Forwarded-For": f"10.{_octet()}.{_octet()}.{_octet()}"}
        with self.client.get(
            "/healthz", name=HEALTH_NAME, headers=self.headers, catch_response=True
        ) as response:
            health = _parsed(response, Health, 200)
            if health is None or health.status != "ok":
                raise StopUser()

    # offers

    def _offers(
        self, surface: Surface, params: dict[str, str], anchors: list[str]
    ) -> OffersResponse | None:
        session = Shared.sessions.view()
        query = {"key": Shared.key, "surface": surface.value, **params}
        if surface != Surface.THANK_YOU:
            query["visitor_id"] = session.visitor_id
            if session.customer_id:
                query["customer_id"] = session.customer_id
        path = "/v1/offers?" + "&".join(f"{k}={_quote(v)}" for k, v in query.items())
        with self.client.get(
            path, name=NAMES[surface], headers=session.headers, catch_response=True
        ) as response:
            body = _parsed(response, OffersResponse, 200)
            if body is None:
                return None
            problem = _offers_problem(body, surface, anchors)
            if problem:
                response.failure(problem)
                return None
        now = int(time.time() * 1000)
        for offer in body.offers:
            session.last_token = offer.token
            # The snippet reports an impression once the offer has been half visible for 1 s.
            session.pending.append(session.event("impression", offer.token, now))
            if random.random() < CLICK_SHARE:
                session.pending.append(session.event("click", offer.token, now + 1500))
        return body

    @task(55)
    def product_page(self) -> None:
        product = Shared.picker.product()
        self._offers(Surface.PRODUCT_PAGE, {"product_id": product}, [product])

    @task(20)
    def cart(self) -> None:
        items = Shared.picker.cart()
        self._offers(Surface.CART, {"items": ",".join(items)}, items)

    @task(8)
    def checkout(self) -> None:
        items = Shared.picker.cart()
        self._offers(Surface.CHECKOUT, {"items": ",".join(items)}, items)

    @task(5)
    def thank_you(self) -> None:
        assert Shared.orders is not None
        order_id, token = Shared.orders.take()
        body = self._offers(
            Surface.THANK_YOU, {"order_id": order_id, "order_token": token}, anchors=[]
        )
        if body is not None:
            Shared.acceptable.extend((order_id, o.token) for o in body.offers)

    # events and accepts

    @task(10)
    def send_events(self) -> None:
        session = Shared.sessions.beacon()
        pending = session.pending
        batch = [pending.popleft() for _ in range(min(BATCH_MAX, len(pending)))]
        if not batch:
            if session.last_token is None:
                self.product_page()  # nothing seen yet: a first page view instead
                return
            batch = [session.event("view", session.last_token, int(time.time() * 1000))]
        payload = orjson.dumps({"key": Shared.key, "events": batch})
        # As the snippet sends them: a beacon is text/plain, so no CORS preflight.
        headers = {**session.headers, "Content-Type": "text/plain;charset=UTF-8"}
        with self.client.post(
            "/v1/events",
            data=payload,  # type: ignore[arg-type]
            headers=headers,
            name=EVENTS_NAME,
            catch_response=True,
        ) as response:
            body = _parsed(response, EventsResponse, 202)
            if body is None:
                return
            if body.rejected or body.accepted + body.duplicates != len(batch):
                response.failure(
                    f"{len(batch)} sent, {body.accepted} accepted, {body.duplicates} duplicates,"
                    f" rejected {[(r.index, r.code) for r in body.rejected][:3]}"
                )

    @task(2)
    def accept(self) -> None:
        pool = Shared.orders
        assert pool is not None
        offer = _pop(Shared.acceptable, lambda o: any(f[0] == o[0] for f in pool.fresh))
        if offer is None:
            self.thank_you()  # no thank-you offer waiting yet: show one first
            return
        order_id, token = offer
        pool.retire(order_id)  # at most one accept per order: well under its cap
        headers = {**self.headers, "Idempotency-Key": uuid.uuid4().hex}
        with self.client.post(
            f"/v1/accept?key={Shared.key}",
            data=orjson.dumps({"token": token, "quantity": 1}),  # type: ignore[arg-type]
            headers={**headers, "Content-Type": "application/json"},
            name=ACCEPT_NAME,
            catch_response=True,
        ) as response:
            body = _parsed(response, AcceptResponse, 200)
            if body is not None and body.order_id != order_id:
                response.failure(f"accepted on order {body.order_id}, not {order_id}")


def _pop(
    queue: deque[tuple[str, str]], usable: Callable[[tuple[str, str]], bool]
) -> tuple[str, str] | None:
    """The newest usable entry, dropping unusable ones on the way."""
    while queue:
        entry = queue.pop()
        if usable(entry):
            return entry
    return None


def _octet() -> int:
    return random.randint(1, 254)


def _quote(value: str) -> str:
    return quote(value, safe=",")


# The shape named by OFFER_SHAPE; Locust picks up the one class bound at module level.
Shape = shapes.selected()
