"""Settings read once, from the environment and the command line."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from offer_service.exceptions import BadSetting
from offer_service.serving.limits import KEYS_MAX, PREPARED_MAX, PRODUCTS_MAX, VISITORS_MAX
from offer_service.serving.visitor_index import VISITOR_INDEX_REBUILD_S
from offer_service.storage.redis.pool import POOL_SIZE_MAX_DEFAULT, default_pool_size

N = TypeVar("N", int, float)

DEFAULT_STORE_URL = "sqlite:///./offer-data/offers.db"
DEFAULT_SPOOL_DIR = "./offer-data/spool"
# The proxies whose X-Forwarded-For is believed when OFFER_TRUST_PROXY=1: a proxy on this host.
DEFAULT_TRUSTED_PROXIES = "127.0.0.1,::1"
DEFAULT_KEEP_ALIVE_TIMEOUT_S = 5
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_CONCURRENCY_LIMIT = 1000
# The accept's own call to a store's charge endpoint (docs/api.md), and the settling of a charge
# whose outcome that call did not learn: a pass every interval, each call allowed the timeout.
DEFAULT_CHARGE_TIMEOUT_S = 5.0
DEFAULT_SETTLE_INTERVAL_S = 5.0
DEFAULT_SETTLE_TIMEOUT_S = 30.0
# After SIGTERM, seconds a process keeps serving while /readyz answers 503 "draining": a
# balancer polling readiness every 1-2 s has taken it out by then.
DEFAULT_DRAIN_S = 5.0
UNSET = "unset"
# An embedded store's item model is retrained by `serve` once this many new orders arrived
# through its admin API since the last training it started (serving/training.py).
DEFAULT_RETRAIN_ORDERS = 500
NOT_POSITIVE = "{name} must be a positive number, not {raw!r}"
NOT_NEGATIVE = "{name} must be 0 or a positive number, not {raw!r}"


@dataclass(frozen=True, slots=True)
class Settings:
    """A serving process's settings; each field's environment variable, command-line option
    and one-line help are in OPTIONS below."""

    store_url: str = DEFAULT_STORE_URL
    # Serve the demo storefront at /demo/ (the `demo` command turns it on).
    demo: bool = False
    log_level: str = "info"
    # Take the client address (and scheme) from X-Forwarded-For (and -Proto) when the peer is
    # one of `trusted_proxies`: the right-most hop that is not one of them, since every proxy
    # appends its peer and anything to the left of the first proxy is the client's to forge.
    trust_proxy: bool = False
    # Addresses and networks (CIDR), comma-separated.
    trusted_proxies: str = DEFAULT_TRUSTED_PROXIES
    # Seconds a connection may stay idle after a response before it is closed.
    keep_alive_timeout_s: int = DEFAULT_KEEP_ALIVE_TIMEOUT_S
    # Seconds a request's line and headers may take from the connection opening (or from the
    # request's first byte): a connection still without them is closed (checked every half).
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    # Connections plus requests in flight per process beyond which a request is answered 503 at
    # once; below the open-file limit, so a flood of connections meets it before the process
    # runs out of file descriptors.
    concurrency_limit: int = DEFAULT_CONCURRENCY_LIMIT
    # Commands each Redis client (reads; writes) has in flight at once; more wait for a free
    # connection within their deadline. None: `redis_pool()`'s default.
    redis_pool_size: int | None = None
    # Where events wait while the shared store is unreachable (one file per process).
    spool_dir: str = DEFAULT_SPOOL_DIR
    # Aggregate the Redis event streams in this process (off when separate workers do it).
    aggregator: bool = True
    # The service's public base URL (https://offers.example.com): tracked links in emails and
    # SMS start with it. Unset: the URL the request came in on.
    public_url: str | None = None
    # Let stores' charge endpoints be http:// or on loopback and private networks (the demo, the
    # tests and local development); otherwise only https:// to public addresses is called.
    allow_private_charge_urls: bool = False
    # Seconds the accept waits on the store's charge endpoint before its answer is 202 pending.
    charge_timeout_s: float = DEFAULT_CHARGE_TIMEOUT_S
    # Seconds between two looks for charges to settle, and a settling call's own timeout.
    settle_interval_s: float = DEFAULT_SETTLE_INTERVAL_S
    settle_timeout_s: float = DEFAULT_SETTLE_TIMEOUT_S
    # Seconds between SIGTERM (or SIGINT) and closing the listener, serving on meanwhile.
    drain_s: float = DEFAULT_DRAIN_S
    # New orders after which `serve` retrains an embedded (SQLite) store's item model.
    retrain_orders: int = DEFAULT_RETRAIN_ORDERS
    # Entries each per-process table that grows with traffic may hold (serving/limits.py).
    cache_prepared: int = PREPARED_MAX
    cache_products: int = PRODUCTS_MAX
    cache_visitors: int = VISITORS_MAX
    cache_keys: int = KEYS_MAX
    # Seconds between rebuilds of each store's index of visitors with a state (0: no index).
    visitor_index_s: float = VISITOR_INDEX_REBUILD_S

    def redis_pool(self) -> int:
        """The Redis pool size: as set, or sized from the concurrency limit (each request
        waits on one command at a time), at most POOL_SIZE_MAX_DEFAULT."""
        return self.redis_pool_size or default_pool_size(self.concurrency_limit)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings of `environ` (OPTIONS names each field's variable); a variable unset
        or empty leaves the field's default."""
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw = environ.get(option.env)
            if option.field is not None and raw:
                values[option.field] = option.read(option.env, raw)
        return cls(**values)


def _text(name: str, raw: str) -> str:
    return raw


def _on(name: str, raw: str) -> bool:
    return raw == "1"


def _not_off(name: str, raw: str) -> bool:
    return raw != "0"


def _number(kind: Callable[[str], N], *, zero: bool = False) -> Callable[[str, str], N]:
    """A reader of a positive number (or 0 too, if `zero`) of `kind`."""

    def read(name: str, raw: str) -> N:
        wrong = (NOT_NEGATIVE if zero else NOT_POSITIVE).format(name=name, raw=raw)
        try:
            value = kind(raw)
        except ValueError:
            raise BadSetting(wrong) from None
        if not (value > 0 or (zero and value == 0)):
            raise BadSetting(wrong)
        return value

    return read


@dataclass(frozen=True, slots=True)
class Option:
    """One environment variable: the Settings field it sets (None: read elsewhere), how its
    text is read, the `serve` option that sets it too, and what it does (one line of the
    configuration table, docs/configuration.md, rendered from these)."""

    env: str
    field: str | None
    read: Callable[[str, str], Any]
    help: str
    flag: str | None = None
    default: str | None = None  # as the table shows it; None: the field's own default


OPTIONS: tuple[Option, ...] = (
    Option(
        "OFFER_STORE_URL",
        "store_url",
        _text,
        "the store: `sqlite:///path` (embedded), `redis://host:port/db` or "
        "`redis+cluster://host:port`, with timeouts and the event log's retention as query "
        "parameters ([scale-out.md](scale-out.md#when-redis-fails))",
        flag="--store-url",
    ),
    Option(
        "OFFER_PUBLIC_URL",
        "public_url",
        _text,
        "the service's public https address (`https://offers.example.com`), which tracked "
        "links and feed URLs in emails and SMS start with ([journeys.md](journeys.md)). Set it "
        "in production: unset, links are made from the request's `Host` header, which a client "
        "can forge, so feeds are then answered `Cache-Control: private` with `Vary: Host` and no "
        "shared cache (CDN, proxy) can keep them",
    ),
    Option(
        "OFFER_SPOOL_DIR",
        "spool_dir",
        _text,
        "where events and exposures are spooled while the store is unreachable (one file per "
        "process); on a volume, so a restarted process replays what it left",
        flag="--spool-dir",
    ),
    Option(
        "OFFER_AGGREGATOR",
        "aggregator",
        _not_off,
        "`0`: do not aggregate the Redis event streams inside `serve` (separate `offer-service "
        "worker` processes do)",
        flag="--no-aggregator",
    ),
    Option(
        "OFFER_DRAIN_SECONDS",
        "drain_s",
        _number(float, zero=True),
        "after SIGTERM or SIGINT, seconds a process keeps serving while `/readyz` answers 503 "
        '`{"status": "draining"}`, before it closes its listener, finishes what is in flight '
        "and flushes ([scale-out.md](scale-out.md#stopping-a-process)); `0`: stop at once (the "
        "demo's default)",
        flag="--drain-seconds",
    ),
    Option(
        "OFFER_TRUST_PROXY",
        "trust_proxy",
        _on,
        "`1`: behind a proxy, take the client address (for rate limits) from `X-Forwarded-For` "
        "and the scheme from `X-Forwarded-Proto`, when the peer is one of "
        "`OFFER_TRUSTED_PROXIES`: the right-most hop that is not a trusted proxy (every proxy "
        "appends its peer; the hops before are the client's to forge). Unset, both headers are "
        "ignored",
    ),
    Option(
        "OFFER_TRUSTED_PROXIES",
        "trusted_proxies",
        _text,
        "the proxies `OFFER_TRUST_PROXY` believes: addresses and networks (`10.0.0.0/8`), "
        "comma-separated; the default is a proxy on the same host",
    ),
    Option(
        "OFFER_KEEP_ALIVE_TIMEOUT",
        "keep_alive_timeout_s",
        _number(int),
        "seconds a connection may stay idle after a response before it is closed (longer keeps "
        "browsers' connections warm, and holds a file descriptor each)",
    ),
    Option(
        "OFFER_HEADER_TIMEOUT",
        "header_timeout_s",
        _number(float),
        "seconds a request's line and headers may take from the connection opening (or from the "
        "request's first byte); a connection that has not sent them by then is closed (within "
        "another half of this). A browser sends them at once; only a stalled or hostile client "
        "needs more",
    ),
    Option(
        "OFFER_CONCURRENCY_LIMIT",
        "concurrency_limit",
        _number(int),
        "open connections plus requests in flight per process beyond which a request is "
        "answered 503 at once; keep it below the open-file limit (`ulimit -n`, which `serve` "
        "raises to its hard limit) minus 64, so a flood of connections meets it before the "
        "process runs out of descriptors",
    ),
    Option(
        "OFFER_REDIS_POOL_SIZE",
        "redis_pool_size",
        _number(int),
        "connections each of a process's two Redis clients (request-path reads; writes) may "
        "use, per node of a cluster: commands beyond it wait for a free connection within their "
        "own deadline (a read's 100 ms), and one that found none answers as a slow read does "
        "(from the cache), never as an outage. Keep processes x 2 x this below Redis's "
        "`maxclients` ([scale-out.md](scale-out.md#connections-to-redis))",
        default=f"min(OFFER_CONCURRENCY_LIMIT, {POOL_SIZE_MAX_DEFAULT})",
    ),
    Option(
        "OFFER_ALLOW_PRIVATE_CHARGE_URLS",
        "allow_private_charge_urls",
        _on,
        "`1`: let stores' `charge_url` be `http://` or on loopback and private networks (the "
        "demo, the tests and local development; `offer-service demo` sets it). Unset, only "
        "`https://` to public hosts is called ([security.md](security.md))",
    ),
    Option(
        "OFFER_CHARGE_TIMEOUT",
        "charge_timeout_s",
        _number(float),
        "seconds an accept waits on the store's charge endpoint; later, its answer is 202 "
        "`pending` and the charge is settled in the background "
        "([api.md](api.md#post-v1accept-one-click))",
    ),
    Option(
        "OFFER_SETTLE_INTERVAL",
        "settle_interval_s",
        _number(float),
        "seconds between two looks, in every `serve` process, for recorded charges whose "
        "outcome is unknown",
    ),
    Option(
        "OFFER_SETTLE_TIMEOUT",
        "settle_timeout_s",
        _number(float),
        "seconds a settling call to the charge endpoint may take (nobody waits on it)",
    ),
    Option(
        "OFFER_RETRAIN_ORDERS",
        "retrain_orders",
        _number(int),
        "new orders (through `POST /v1/admin/orders`) after which a `serve` process retrains an"
        " embedded (SQLite) store's item model, in a child process at a lower priority"
        " ([choosing-offers.md](choosing-offers.md#the-item-model)); a Redis store is retrained"
        " by the `worker`",
    ),
    Option(
        "OFFER_CACHE_PREPARED",
        "cache_prepared",
        _number(int),
        "prepared offer lists a process holds, one per store, surface, anchor products (a "
        "cart's contents) and catalog version, least recently used dropped first "
        "([memory.md](memory.md))",
    ),
    Option(
        "OFFER_CACHE_PRODUCTS",
        "cache_products",
        _number(int),
        "catalog products a process holds decoded, all stores together; past it the copy "
        "starts again ([memory.md](memory.md))",
    ),
    Option(
        "OFFER_CACHE_VISITORS",
        "cache_visitors",
        _number(int),
        "visitors' states a process holds between their requests (each for a second or ten); "
        "past it they are all read again ([memory.md](memory.md))",
    ),
    Option(
        "OFFER_VISITOR_INDEX_SECONDS",
        "visitor_index_s",
        _number(float, zero=True),
        "how often a process rebuilds its index of each store's visitors with a state, which "
        "answers visitors without one without a store read; `0` turns the index off (every "
        "visitor read) ([performance.md](performance.md#visitors-without-state))",
    ),
    Option(
        "OFFER_CACHE_KEYS",
        "cache_keys",
        _number(int),
        "keys a process counts in each of its tables of rate-limit buckets (per client address, "
        "visitor and offer), visitors seen per address and exposures written today; expired "
        "ones are swept first ([memory.md](memory.md))",
    ),
    Option(
        "OFFER_LOG_LEVEL",
        "log_level",
        _text,
        "the level of the JSON log lines on stderr (`debug`, `info`, `warning`, `error`)",
    ),
    Option(
        "OFFER_DEMO",
        "demo",
        _on,
        "`1`: serve the demo storefront at `/demo/` (set by `offer-service demo`)",
        flag="`demo` command",
    ),
    Option(
        "OFFER_METRICS_DIR",
        None,
        _text,
        "where each worker's metrics wait for `/metrics` to sum them (set by `serve --workers N`"
        " to a directory it removes on exit; named here, it is cleared at start: docs/metrics.md)",
        default=UNSET,
    ),
    Option(
        "OFFER_DEMO_PORT",
        None,
        _text,
        "the port the demo's own charge endpoint listens on (set by `offer-service demo`)",
        flag="`demo --port`",
        default=UNSET,
    ),
)


def table_default(option: Option) -> str:
    """The default of `option` as the configuration table shows it."""
    if option.default is not None or option.field is None:
        return option.default or UNSET
    value = next(f.default for f in fields(Settings) if f.name == option.field)
    if value is None or value is False:
        return UNSET
    if value is True:
        return "1"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
