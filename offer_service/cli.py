"""The `offer-service` command: serve, worker, demo, stores create, import, dashboard-url,
simulate, evaluate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson

from offer_service.exceptions import OfferServiceError, StoreMissing, ValidationFailed
from offer_service.serving.heap import Freezer
from offer_service.settings import DEFAULT_STORE_URL, Settings

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from offer_service.domain.records import StoreRecord
    from offer_service.storage.protocols import Store


def _store_url(args: argparse.Namespace) -> str:
    url: str = args.store_url or os.environ.get("OFFER_STORE_URL") or DEFAULT_STORE_URL
    return url


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


class Progress:
    """A one-line progress bar on a terminal (stderr); silent when stderr is not a terminal."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label = label
        self.total = total
        self.enabled = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        rate = done / max(time.monotonic() - self.started, 1e-6)
        if self.total:
            width = 30
            filled = int(width * min(done / self.total, 1.0))
            bar = "#" * filled + "-" * (width - filled)
            text = f"\r{self.label} [{bar}] {done:,}/{self.total:,} ({rate:,.0f}/s)"
        else:
            text = f"\r{self.label} {done:,} rows ({rate:,.0f}/s)"
        sys.stderr.write(text)
        sys.stderr.flush()

    def done(self, message: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r{self.label}: {message}\033[K\n")


# Python runs a full garbage collection (every object of the process) after ten of the middle
# generation's, once the survivors have grown by a quarter. A full collection walks every cached
# offer list: about 100 ms with a few thousand cached carts, a pause every answer in flight
# waits out. Young garbage (a request's own cycles) is still collected at the default rate;
# full collections run ten times less often.
GC_THRESHOLDS = (700, 10, 100)

# SQLite writes run in a worker thread and give the interpreter lock up around each statement;
# taking it back waits until the event loop's thread lets go, by default after 5 ms. An events
# batch is answered once its write commits, so every wait kept the batches of a whole write in
# memory longer (their objects examined again by each collection) and the write's pages out of
# the CPU's caches: in process, 30-36 us of CPU per event at 5 ms, 24-27 us at 0.1-1 ms.
SWITCH_INTERVAL_S = 0.0005


def tune_interpreter() -> None:
    """What a process that does nothing but serve wants of the interpreter (see above, and
    serving/heap.py); the process's own to set, so `serve` sets it, never `create_app`."""
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    Freezer().install()


# File descriptors a serving process needs besides its connections: the listening socket, the
# store's files or Redis connections, the spool, logs, the event loop's own.
FILES_RESERVED = 64
FEW_FILES = (
    "warning: OFFER_CONCURRENCY_LIMIT ({limit}) is above what the open-file limit ({files}) "
    "leaves for connections; a flood of connections would meet that limit first (raise "
    "`ulimit -n` or lower OFFER_CONCURRENCY_LIMIT)"
)


def raise_open_file_limit() -> int | None:
    """Raise this process's open-file limit to its ceiling (the hard limit), as Go's runtime
    does for every program: each connection holds a descriptor, and at the common default of
    1,024 a thousand idle connections leave nothing for the next client. The limit now in force
    (None where there is none to read); workers inherit it."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        # A ceiling the platform does not allow (macOS) leaves the limit as it was.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def serving_app() -> Starlette:
    """The app of one serving process (each uvicorn worker calls this): the interpreter tuned,
    then `create_app` with the settings of the environment."""
    from offer_service.app import create_app

    tune_interpreter()
    return create_app()


def cmd_serve(args: argparse.Namespace, *, demo: bool = False) -> int:
    from offer_service.web.collect import share_between_workers
    from offer_service.web.process import run_server

    os.environ["OFFER_STORE_URL"] = _store_url(args)
    # The app (in each uvicorn worker process) reads its settings from the environment.
    if getattr(args, "spool_dir", None):
        os.environ["OFFER_SPOOL_DIR"] = args.spool_dir
    if getattr(args, "no_aggregator", False):
        os.environ["OFFER_AGGREGATOR"] = "0"
    if getattr(args, "drain_seconds", None) is not None:
        os.environ["OFFER_DRAIN_SECONDS"] = str(args.drain_seconds)
    if demo:
        os.environ["OFFER_DEMO"] = "1"
        os.environ.setdefault("OFFER_DEMO_PORT", str(args.port))
        # The demo store charges through the demo's own endpoint, on this machine.
        os.environ.setdefault("OFFER_ALLOW_PRIVATE_CHARGE_URLS", "1")
        # Nothing balances the demo: Ctrl-C stops it at once.
        os.environ.setdefault("OFFER_DRAIN_SECONDS", "0")
        print(
            f"Demo store ready: storefront http://{args.host}:{args.port}/demo/ "
            f"(publishable key pk_demo, secret key sk_demo)",
            file=sys.stderr,
        )
    settings = Settings.from_env()
    files = raise_open_file_limit()
    if files is not None and settings.concurrency_limit > files - FILES_RESERVED:
        print(FEW_FILES.format(limit=settings.concurrency_limit, files=files), file=sys.stderr)
    # Where each worker's counts wait for a /metrics in any worker to sum them.
    share_between_workers(getattr(args, "workers", 1) or 1)
    run_server(settings, args.host, args.port, getattr(args, "workers", 1) or 1, quiet=demo)
    return 0


PRIVATE_HINT = (
    "(an http:// charge endpoint, or one on this machine or a private network, needs "
    "OFFER_ALLOW_PRIVATE_CHARGE_URLS=1: for development only)"
)


def _refused(messages: list[str], *, hint: bool) -> int:
    for message in messages:
        print(f"error: {message}", file=sys.stderr)
    if hint and any("charge_url" in message for message in messages):
        print(PRIVATE_HINT, file=sys.stderr)
    return 2


def cmd_stores_create(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from offer_service.commerce.egress import check_resolved
    from offer_service.domain.charge_urls import BadChargeUrl
    from offer_service.domain.policy import StoreRules, rules_context
    from offer_service.settings import Settings

    allow_private = Settings.from_env().allow_private_charge_urls
    fields = {"allowed_origins": args.origin or [], "charge_url": args.charge_url}
    try:
        rules = StoreRules.model_validate(
            fields, context=rules_context("private" if allow_private else "public")
        )
        if rules.charge_url is not None:
            asyncio.run(check_resolved(rules.charge_url, allow_private=allow_private))
    except ValidationError as exc:
        messages = [err["msg"].removeprefix("Value error, ") for err in exc.errors()]
        return _refused(messages, hint=not allow_private)
    except BadChargeUrl as exc:
        return _refused([str(exc)], hint=not allow_private)

    async def run() -> dict[str, str]:
        from offer_service.storage import open_store

        store = open_store(_store_url(args))
        await store.open()
        try:
            record = await store.create_store(args.name, rules=rules)
        finally:
            await store.close()
        return {
            "store_id": record.id,
            "publishable_key": record.publishable_key,
            "secret_key": record.secret_key,
            "webhook_secret": record.webhook_secret,
        }

    _print_json(asyncio.run(run()))
    return 0


def cmd_stores_rotate_key(args: argparse.Namespace) -> int:
    """`stores rotate-key`: what POST /v1/admin/<kind>-key/rotate does, run by an operator with
    access to the store's data (for when the secret key itself may be in the wrong hands)."""
    from offer_service.storage.rotation import rotate_api_key
    from offer_service.types import now_ms

    async def run() -> dict[str, Any] | None:
        from offer_service.storage import open_store

        store = open_store(_store_url(args), create=False)
        await store.open()
        try:
            if await store.get_store(args.store) is None:
                return None
            now, grace_ms = now_ms(), args.grace_seconds * 1000
            rotation = await rotate_api_key(
                store, args.store, args.kind, grace_ms=grace_ms, now_ms=now
            )
        finally:
            await store.close()
        expires = now + grace_ms
        answer: dict[str, Any] = {
            f"{args.kind}_key": rotation.key,
            "previous_key_expires_at": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires / 1000)
            )
            if grace_ms
            else None,
        }
        if rotation.webhook_secret is not None:
            answer["webhook_secret"] = rotation.webhook_secret
        return answer

    result = asyncio.run(run())
    if result is None:
        print(f"error: no store {args.store!r} in {_store_url(args)}", file=sys.stderr)
        return 1
    _print_json(result)
    return 0


def _guess_format(kind: str, path: Path, given: str | None) -> str:
    if given:
        return given
    name = path.name.lower()
    if kind == "orders":
        return "json" if name.endswith(".json") else "online-retail"
    return "json" if name.endswith(".json") else "csv"


def cmd_import(args: argparse.Namespace) -> int:
    from offer_service import importers
    from offer_service.importers import Rejection
    from offer_service.importers.jobs import ImportJob
    from offer_service.web.import_runs import import_catalog_into

    path = Path(args.file)
    if not path.exists():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2
    fmt = _guess_format(args.kind, path, args.format)
    started = time.monotonic()
    progress = Progress(f"import {args.kind}")

    async def run() -> tuple[dict[str, Any], list[Rejection]]:
        from offer_service.commerce.ingest import import_orders

        store, record = await _open_tenant(args)
        try:
            if args.kind == "catalog":
                if fmt == "json":
                    job = ImportJob("catalog_json", args.currency or "USD")
                elif fmt in ("csv", "shopify"):
                    job = ImportJob("catalog_csv", args.currency or "USD", fmt)  # type: ignore[arg-type]
                else:
                    raise SystemExit(
                        f"error: catalog format must be json, csv or shopify, not {fmt}"
                    )
                # A batch at a time, as the HTTP route does: the file's products never all sit
                # in memory.
                with path.open("rb") as source:
                    done = await import_catalog_into(store, record.id, job, source)
                return {"upserted": done.upserted, "rejected": done.rejected_count}, done.rejected
            if fmt == "json":
                with path.open("rb") as source:
                    res = importers.parse_orders_json(source)
                orders, returns, rejected = res.items, [], res.rejected
                rejected_total = res.rejected_total
                summary_extra: dict[str, Any] = {}
            elif fmt == "online-retail":
                parsed = importers.parse_online_retail(
                    path, currency=args.currency or "GBP", progress=progress
                )
                progress.done(f"{parsed.stats.rows:,} rows read")
                existing = await store.get_products(record.id, [p.id for p in parsed.products])
                new_products = [p for p in parsed.products if p.id not in existing]
                await store.upsert_products(record.id, new_products)
                orders, returns, rejected = parsed.orders, parsed.returns, parsed.rejected
                rejected_total = parsed.rejected_total
                summary_extra = {"products": len(new_products), "stats": parsed.stats.as_dict()}
            else:
                raise SystemExit(f"error: orders format must be json or online-retail, not {fmt}")
            summary = await import_orders(store, record, orders, returns)
            if summary.rebuilt:  # a bulk import: learn from it at once
                from offer_service.serving.training import train_store

                await train_store(store, record, progress=_say)
            return {
                "imported": summary.imported,
                "duplicates": summary.duplicates,
                "returns": summary.returns,
                "rejected": rejected_total,
                "refused_tokens": len(summary.refused_tokens),
                **summary_extra,
            }, rejected
        finally:
            await store.close()

    try:
        result, rejected = asyncio.run(run())
    except ValidationFailed as exc:  # the file as a whole (its header, its encoding)
        print(f"error: {path.name}: {exc.message}", file=sys.stderr)
        return 1
    result["seconds"] = round(time.monotonic() - started, 2)
    if rejected:
        result["errors"] = [r.as_dict() for r in rejected[:100]]
    _print_json(result)
    for r in rejected[:20]:
        where = f"{r.source}:" if r.source else ""
        line = f"line {r.line}" if r.line is not None else f"item {r.index}"
        print(f"{path.name}:{where}{line}: {r.message}", file=sys.stderr)
    return 1 if rejected else 0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _open_tenant(args: argparse.Namespace) -> tuple[Store, StoreRecord]:
    """The open store of --store-url and the record of --store (exits when there is none)."""
    from offer_service.storage import open_store

    store = open_store(_store_url(args), create=False)
    await store.open()
    record = await store.get_store(args.store)
    if record is None:
        await store.close()
        raise SystemExit(f"error: no store {args.store!r} in {_store_url(args)}")
    return store, record


def cmd_stores_list_visitors(args: argparse.Namespace) -> int:
    """`stores list-visitors`: fill the listing of a Redis store's visitors with a state."""
    from offer_service.storage.redis.store import RedisStore
    from offer_service.types import now_ms

    async def run() -> int:
        store, record = await _open_tenant(args)
        try:  # SQLite lists them from its tables: nothing to fill
            if isinstance(store, RedisStore):
                return await store.list_visitors(record.id, now_ms())
            return 0
        finally:
            await store.close()

    _print_json({"store_id": args.store, "visitors_added": asyncio.run(run())})
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from offer_service.serving.training import train_store

    async def run() -> dict[str, Any]:
        store, record = await _open_tenant(args)
        try:
            s = await train_store(store, record, progress=_say)
        finally:
            await store.close()
        return s.report()

    _print_json(asyncio.run(run()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="offer-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def store_url(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--store-url",
            help=f"sqlite:///path, redis://host:port/db or redis+cluster://host:port "
            f"(default: $OFFER_STORE_URL or {DEFAULT_STORE_URL})",
        )

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--spool-dir",
        help="where events wait while the store is unreachable "
        "(default: $OFFER_SPOOL_DIR or ./offer-data/spool)",
    )
    serve.add_argument(
        "--no-aggregator",
        action="store_true",
        help="do not aggregate the Redis event streams here (separate `worker` processes do)",
    )
    serve.add_argument(
        "--drain-seconds",
        type=float,
        help="after SIGTERM, serve on this long with /readyz answering 503 before stopping "
        "(default: $OFFER_DRAIN_SECONDS or 5)",
    )
    store_url(serve)

    worker = sub.add_parser(
        "worker", help="aggregate a Redis store's event streams (apart from `serve`)"
    )
    worker.add_argument(
        "--spool-dir", help="also replay spool files left by this machine's service processes"
    )
    store_url(worker)

    demo = sub.add_parser("demo", help="load the demo store and serve it with a demo storefront")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    store_url(demo)

    stores = sub.add_parser("stores", help="manage stores (tenants)")
    stores_sub = stores.add_subparsers(dest="stores_command", required=True)
    create = stores_sub.add_parser("create", help="create a store and print its keys")
    create.add_argument("--name", required=True)
    create.add_argument("--origin", action="append", help="allowed storefront origin (repeatable)")
    create.add_argument("--charge-url")
    store_url(create)
    rotate = stores_sub.add_parser(
        "rotate-key", help="replace a store's publishable or secret key and print the new one"
    )
    rotate.add_argument("--store", required=True, help="the store id")
    rotate.add_argument("--kind", required=True, choices=["publishable", "secret"])
    rotate.add_argument(
        "--grace-seconds",
        type=int,
        default=86_400,
        help="how long the old key keeps working (default 86400; 0 revokes it now)",
    )
    store_url(rotate)
    listing = stores_sub.add_parser("list-visitors", help="list a Redis store's visitors")
    listing.add_argument("--store", required=True, help="the store id")
    store_url(listing)

    imp = sub.add_parser("import", help="import a catalog or orders file into a store")
    imp.add_argument("kind", choices=["catalog", "orders"])
    imp.add_argument("file")
    imp.add_argument("--store", required=True, help="the store id")
    imp.add_argument("--format", choices=["json", "csv", "shopify", "online-retail"])
    imp.add_argument(
        "--currency", help="currency of prices in the file (default USD; GBP for online-retail)"
    )
    store_url(imp)

    train = sub.add_parser(
        "train", help="fit a store's item model on its orders and store its neighbour lists"
    )
    train.add_argument("--store", required=True, help="the store id")
    store_url(train)

    from offer_service.measurement import dashboard

    dashboard.add_parser(sub, store_url)
    for name, help_text in TOOL_COMMANDS.items():
        tool = _tool(name)
        if tool is not None:
            tool.add_parser(sub)
        else:
            sub.add_parser(name, help=f"{help_text} (needs the offer_service_tools package)")
    return parser


# Commands that live in offer_service_tools, beside the service: the service runs without them.
TOOL_COMMANDS = {
    "simulate": "drive synthetic shoppers through a running service",
    "evaluate": "hide one product per basket and measure whether offers find it",
}
MISSING_TOOLS = (
    "error: `offer-service {}` needs the offer_service_tools package, which ships beside the "
    "service in this repository; install the project from its checkout"
)


def _tool(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"offer_service_tools.{name}")
    except ImportError:
        return None


def _needs_tools(command: str) -> int | None:
    """Exit status 2 with a message when the command's tools package is missing."""
    if importlib.util.find_spec("offer_service_tools") is None:
        print(MISSING_TOOLS.format(command), file=sys.stderr)
        return 2
    return None


def cmd_dashboard_url(args: argparse.Namespace) -> int:
    from offer_service.measurement.dashboard import cmd_dashboard_url as run

    return run(args, _store_url(args))


def cmd_simulate(args: argparse.Namespace) -> int:
    if (missing := _needs_tools("simulate")) is not None:
        return missing
    from offer_service_tools.simulate import cmd_simulate as run

    return run(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if (missing := _needs_tools("evaluate")) is not None:
        return missing
    from offer_service_tools.evaluate import cmd_evaluate as run

    return run(args)


def cmd_worker(args: argparse.Namespace) -> int:
    from offer_service.serving.worker import run_worker
    from offer_service.web.telemetry import configure_logging

    configure_logging(os.environ.get("OFFER_LOG_LEVEL", "info"))
    asyncio.run(run_worker(_store_url(args), args.spool_dir))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "worker": cmd_worker,
    "demo": lambda a: _needs_tools("demo") or cmd_serve(a, demo=True),
    "import": cmd_import,
    "train": cmd_train,
    "dashboard-url": cmd_dashboard_url,
    "simulate": cmd_simulate,
    "evaluate": cmd_evaluate,
}


MISSING_STORE = "error: {}; name the store's database with --store-url or OFFER_STORE_URL"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A user's mistake (a wrong path, an unreachable store) is one line, never a traceback.
    try:
        if args.command == "stores":
            if args.stores_command == "rotate-key":
                return cmd_stores_rotate_key(args)
            if args.stores_command == "list-visitors":
                return cmd_stores_list_visitors(args)
            return cmd_stores_create(args)
        return COMMANDS[args.command](args)
    except StoreMissing as exc:
        print(MISSING_STORE.format(exc), file=sys.stderr)
    except OfferServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
