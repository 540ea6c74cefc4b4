"""Big stores in the shape of the real one: the Online Retail data set tiled to any size.

A store of N products is built from shards of `shard_size` products (default 1,000), each a random
part of the real catalog under its own ids (`85123A-17`); a shard's orders are real orders of the
data set, drawn at random and restricted to the shard's products, until the shard has its share of
the order lines. So popularity, co-purchase structure and repeat customers keep the real shape at
every scale, products of different shards are never bought together, and a 1k-product store is
exactly one shard of a 1M-product one: comparing the two compares catalog size and nothing else.

Everything is written through the Store API in bulk (products, orders, pair counts, neighbour
lists), as `ingest.rebuild_affinity` would, but a shard at a time so memory stays flat: pairs never
cross shards, so each shard's pair counts are complete on their own, and the neighbour lists are
ranked with the store-wide basket count N. The SQLite file is cached: a rerun with the same size
and seed opens it at once.

    python load_tests/synthetic.py --products 1000000 --lines 5000000 [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from offer_service.decision import affinity
from offer_service.domain.orders import Order, OrderLine
from offer_service.domain.policy import StoreRules
from offer_service.domain.products import Product
from offer_service.domain.records import PairCount
from offer_service.storage.protocols import Store

# Bump when the generated data changes for the same arguments (invalidates cached files).
GENERATOR_VERSION = 2
SHARD_SIZE = 1_000
NEIGHBORS_K = 50


@dataclass(frozen=True, slots=True)
class StoreKeys:
    """Fixed ids and keys, so benchmark URLs are the same for every generated store."""

    store_id: str = "bench"
    publishable_key: str = "pk_bench"
    secret_key: str = "sk_bench"
    webhook_secret: str = "whsec_bench"


KEYS = StoreKeys()


def bench_rules() -> StoreRules:
    """Default rules, except that one load generator may send as much as it likes."""
    rules = StoreRules()
    limits = getattr(rules, "rate_limits", None)
    if limits is None:  # a release without rate limits
        return rules
    # Every limit the release has (request limits; then the event budget and the rate flags).
    unlimited = limits.model_copy(update=dict.fromkeys(type(limits).model_fields, 1_000_000))
    return rules.model_copy(update={"rate_limits": unlimited})


async def create_bench_store(store: Store, name: str) -> None:
    await store.create_store(
        name,
        store_id=KEYS.store_id,
        publishable_key=KEYS.publishable_key,
        secret_key=KEYS.secret_key,
        webhook_secret=KEYS.webhook_secret,
        rules=bench_rules(),
    )


async def import_real(store: Store, dataset: Path) -> dict[str, int]:
    """The whole data set, as `offer-service import orders --format online-retail` does it."""
    from offer_service.commerce.ingest import import_orders
    from offer_service.importers import read_online_retail

    await create_bench_store(store, "Online Retail")
    record = await store.get_store(KEYS.store_id)
    assert record is not None
    parsed = read_online_retail(dataset)
    await store.upsert_products(record.id, parsed.products)
    summary = await import_orders(store, record, parsed.orders, parsed.returns)
    return {"products": len(parsed.products), "orders": summary.imported}


def _chosen(base: list[Product], shard: int, count: int) -> list[Product]:
    """The real products a shard copies: a random part of the catalog, its own for each shard."""
    return base if count >= len(base) else random.Random(shard).sample(base, count)


def _shard_products(chosen: list[Product], shard: int) -> list[Product]:
    return [
        Product(
            id=f"{p.id}-{shard}",
            title=p.title,
            price=p.price,
            currency=p.currency,
            url=f"{p.url}-{shard}",
        )
        for p in chosen
    ]


def _shard_orders(
    real: list[Order], kept: set[str], shard: int, line_budget: int, seed: int
) -> list[Order]:
    """Real orders drawn at random, restricted to the shard's products, until the budget."""
    rng = random.Random(seed * 1_000_003 + shard)
    orders: list[Order] = []
    lines = 0
    attempts = 0
    while lines < line_budget and attempts < 50 * max(line_budget, 1):
        attempts += 1
        order = real[rng.randrange(len(real))]
        own = tuple(
            OrderLine(f"{line.product_id}-{shard}", line.quantity, line.price)
            for line in order.lines
            if line.product_id in kept
        )
        if not own:
            continue
        orders.append(
            Order(
                id=f"{order.id}-{shard}-{len(orders)}",
                placed_at_ms=order.placed_at_ms,
                currency=order.currency,
                lines=own,
                customer_id=f"{order.customer_id}-{shard}" if order.customer_id else None,
            )
        )
        lines += len(own)
    return orders


class _Pairs(Mapping[tuple[str, str], int]):
    """A shard's pair counts as the `(a, b) -> n` mapping `add_pair_counts` takes, read straight
    from the counts (a dict of a million tuples would cost more than the write)."""

    def __init__(self, counts: affinity.AffinityCounts) -> None:
        self.counts = counts
        self.size = len(counts)

    def __getitem__(self, key: tuple[str, str]) -> int:
        n: int = self.counts.pair_count(*key)
        if not n:
            raise KeyError(key)
        return n

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((a, b) for a, b, _ in self.counts.pairs())

    def __len__(self) -> int:
        return self.size

    def items(self) -> Iterator[tuple[tuple[str, str], int]]:  # type: ignore[override]
        return (((a, b), n) for a, b, n in self.counts.pairs())


async def generate(
    store: Store,
    dataset: Path,
    products: int,
    lines: int,
    seed: int = 7,
    shard_size: int = SHARD_SIZE,
    log: bool = True,
) -> dict[str, int]:
    from offer_service.importers import read_online_retail

    parsed = read_online_retail(dataset)
    base = sorted(parsed.products, key=lambda p: p.id)
    real = [o for o in parsed.orders if o.lines]
    shard_size = min(shard_size, len(base))
    shards = math.ceil(products / shard_size)
    sizes = [min(shard_size, products - s * shard_size) for s in range(shards)]
    budgets = [round(lines * size / products) for size in sizes]

    # Pass 1: the orders of every shard, so N (all baskets of the store) is known before any
    # neighbour list is ranked. Only ids are kept; orders are rebuilt shard by shard in pass 2.
    plans = []
    n_total = 0
    for s in range(shards):
        kept = {p.id for p in _chosen(base, s, sizes[s])}
        orders = _shard_orders(real, kept, s, budgets[s], seed)
        n_total += len(orders)
        plans.append(kept)
        del orders

    await create_bench_store(store, f"Synthetic {products} products")
    started = time.monotonic()
    written_lines = written_orders = pairs = 0
    for s in range(shards):
        shard_products = _shard_products(_chosen(base, s, sizes[s]), s)
        orders = _shard_orders(real, plans[s], s, budgets[s], seed)
        await store.upsert_products(KEYS.store_id, shard_products)
        await store.add_orders(KEYS.store_id, orders)
        counts = affinity.count_pairs(o.product_ids for o in orders)
        counts.n = n_total  # lift is relative to every basket of the store
        increments = _Pairs(counts)
        if increments:
            await store.add_pair_counts(KEYS.store_id, increments)
        lists: dict[str, list[PairCount]] = affinity.build_neighbor_lists(
            counts, k=NEIGHBORS_K, min_pair_count=bench_rules().min_pair_count
        )
        await store.set_neighbors(KEYS.store_id, lists)
        written_orders += len(orders)
        written_lines += sum(len(o.lines) for o in orders)
        pairs += len(increments)
        if log and (s % 50 == 0 or s == shards - 1):
            print(
                f"  shard {s + 1}/{shards}: {written_orders:,} orders, {written_lines:,} lines,"
                f" {pairs:,} pairs, {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    return {
        "products": products,
        "orders": written_orders,
        "order_lines": written_lines,
        "baskets": n_total,
        "pairs": pairs,
        "shards": shards,
    }


def cached_sqlite(
    out_dir: Path,
    dataset: Path,
    products: int,
    lines: int,
    seed: int = 7,
    shard_size: int = SHARD_SIZE,
) -> tuple[Path, dict[str, int]]:
    """The generated store's SQLite file (built on first use) and its counts."""
    from offer_service.storage.sqlite.store import SQLiteStore

    name = f"synthetic-v{GENERATOR_VERSION}-{products}p-{lines}l-{shard_size}sh-s{seed}"
    db, meta = out_dir / f"{name}.db", out_dir / f"{name}.json"
    if db.exists() and meta.exists():
        return db, json.loads(meta.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"{name}.building.db"
    for leftover in out_dir.glob(f"{name}.building.db*"):
        leftover.unlink()
    print(f"generating {products:,} products / {lines:,} order lines -> {db}", file=sys.stderr)

    async def build() -> dict[str, int]:
        store = SQLiteStore(str(tmp))
        await store.open()
        try:
            started = time.monotonic()
            counts = await generate(store, dataset, products, lines, seed, shard_size)
            counts["build_seconds"] = round(time.monotonic() - started)
            return counts
        finally:
            await store.close()

    counts = asyncio.run(build())
    _checkpoint(tmp)
    tmp.replace(db)
    meta.write_text(json.dumps(counts, indent=2))
    return db, counts


def _checkpoint(path: Path) -> None:
    """Fold the WAL into the main file so the cached file stands alone."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    from workload import DEFAULT_DATASET

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--lines", type=int, default=5_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE, help="products per shard")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--out", type=Path, default=Path("/tmp/offer_bench"))
    args = parser.parse_args(argv)
    db, counts = cached_sqlite(
        args.out, args.dataset, args.products, args.lines, args.seed, args.shard_size
    )
    print(json.dumps({"db": str(db), **counts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
