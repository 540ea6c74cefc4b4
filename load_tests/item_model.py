"""The local item model against exact EASE on Online Retail, and what training costs at scale.

    python load_tests/item_model.py [--dataset retail-data-by-day.tar.xz] [--split 2011-11-01]
    python load_tests/item_model.py --synthetic 100000 --lines 5000000 [--out DIR]

The first trains both on the orders before the split, with the lambda the exact model chooses on
the last 30 days before it, and prints their leave-one-out hit rates on every later basket of 2+
products (the same queries), the local model at several neighbourhood sizes and at the lambda it
chooses itself, and each fit's wall and CPU time. The second
builds (or reuses) the synthetic store of `synthetic.py`, copies it, and runs `offer-service
train` on the copy in a child process at a lower priority, printing its wall time and peak
memory (the child's maximum resident set).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from offer_service.decision import ease
from offer_service.types import DAY_MS


def main(argv: list[str] | None = None) -> int:
    from workload import DEFAULT_DATASET

    from offer_service.importers import read_online_retail
    from offer_service_tools.evaluate import parse_split

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--split", default="2011-11-01")
    parser.add_argument("--neighbours", default="25,50,100,200")
    parser.add_argument("--synthetic", type=int, help="products of a synthetic store to train")
    parser.add_argument("--lines", type=int, default=5_000_000, help="its order lines")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "offer_bench")
    args = parser.parse_args(argv)
    if args.synthetic:
        return train_synthetic(args.dataset, args.synthetic, args.lines, args.out)
    split = parse_split(args.split)
    parsed = read_online_retail(args.dataset)
    dated = [(o.placed_at_ms, o.product_ids) for o in parsed.orders if o.placed_at_ms < split]
    later = [o.product_ids for o in parsed.orders if o.placed_at_ms >= split]
    older, recent = ease.split_recent(dated, 30 * DAY_MS)
    x_old, ids_old = ease.basket_matrix(older)
    x_val, _ = ease.basket_matrix(recent, ids_old)
    lam, _ = ease.choose_lambda(x_old, x_val)
    # What a store above DENSE_MAX serves: the local model at the lambda it validates itself.
    own, _ = ease.choose_lambda(x_old, x_val, dense_max=0)
    x, ids = ease.basket_matrix(b for _, b in dated)
    test, _ = ease.basket_matrix(later, ids)
    gram = ease.gram_of(x)
    rows = []
    # CPU time beside wall time: on a shared machine the wall time is mostly the neighbours'.
    started, cpu = time.monotonic(), time.process_time()
    exact = ease.fit_dense(gram.toarray(), lam, overwrite=True)
    rows.append(("exact", time.monotonic() - started, time.process_time() - cpu, exact))
    for size in (int(n) for n in args.neighbours.split(",")):
        started, cpu = time.monotonic(), time.process_time()
        local = ease.fit_local(gram, lam, size)
        rows.append((f"local {size}", time.monotonic() - started, time.process_time() - cpu, local))
    started, cpu = time.monotonic(), time.process_time()
    local = ease.fit_local(gram, own)
    name = f"local {ease.LOCAL_NEIGHBOURS}, its own lambda {own:g}"
    rows.append((name, time.monotonic() - started, time.process_time() - cpu, local))
    out = {"lambda": lam, "products": len(ids), "baskets": x.shape[0]}
    for name, seconds, cpu_seconds, b in rows:
        out[name] = {
            "hit_rate@2": round(ease.hit_rate(b, test, 2), 4),
            "hit_rate@5": round(ease.hit_rate(b, test, 5), 4),
            "fit_seconds": round(seconds, 1),
            "fit_cpu_seconds": round(cpu_seconds, 1),
        }
        print(name, out[name], file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))
    return 0


def train_synthetic(dataset: Path, products: int, lines: int, out: Path) -> int:
    """`offer-service train` on a copy of the synthetic store (the cached file keeps its
    co-occurrence lists for the other benchmarks)."""
    from synthetic import KEYS, cached_sqlite

    db, counts = cached_sqlite(out, dataset, products, lines)
    copy = out / f"train-{db.name}"
    shutil.copyfile(db, copy)
    try:
        started = time.monotonic()
        command = ["offer_service.cli", "train", "--store", KEYS.store_id]
        with subprocess.Popen(
            [sys.executable, "-m", *command, "--store-url", f"sqlite:///{copy}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.nice(10),
        ) as child:
            assert child.stderr is not None and child.stdout is not None
            for line in child.stderr:  # the training's progress, timed
                print(f"{time.monotonic() - started:6.0f} s  {line}", end="", file=sys.stderr)
            stdout = child.stdout.read()
        seconds = time.monotonic() - started
        if child.returncode != 0:
            return child.returncode
    finally:
        for path in copy.parent.glob(f"{copy.name}*"):
            path.unlink()
    # ru_maxrss is in KiB on Linux: the largest of the children waited for, here the one.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = usage.ru_maxrss / 2**20
    out_json = {
        **counts,
        "train": json.loads(stdout),
        "wall_seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_memory_gib": round(peak, 2),
    }
    print(json.dumps(out_json, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
