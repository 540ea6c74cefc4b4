"""The local item model against exact EASE on Online Retail: what the sparse approximation loses.

    python load_tests/item_model.py [--dataset retail-data-by-day.tar.xz] [--split 2011-11-01]

Trains both on the orders before the split, with the lambda chosen on the last 30 days before it,
and prints their leave-one-out hit rates on every later basket of 2+ products (the same queries),
the local model at several neighbourhood sizes, and each fit's time.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    args = parser.parse_args(argv)
    split = parse_split(args.split)
    parsed = read_online_retail(args.dataset)
    dated = [(o.placed_at_ms, o.product_ids) for o in parsed.orders if o.placed_at_ms < split]
    later = [o.product_ids for o in parsed.orders if o.placed_at_ms >= split]
    older, recent = ease.split_recent(dated, 30 * DAY_MS)
    x_old, ids_old = ease.basket_matrix(older)
    x_val, _ = ease.basket_matrix(recent, ids_old)
    lam, _ = ease.choose_lambda(x_old, x_val)
    x, ids = ease.basket_matrix(b for _, b in dated)
    test, _ = ease.basket_matrix(later, ids)
    gram = ease.gram_of(x)
    rows = []
    started = time.monotonic()
    exact = ease.fit_dense(gram.toarray(), lam, overwrite=True)
    rows.append(("exact", time.monotonic() - started, exact))
    for size in (int(n) for n in args.neighbours.split(",")):
        started = time.monotonic()
        local = ease.fit_local(gram, lam, size)
        rows.append((f"local {size}", time.monotonic() - started, local))
    out = {"lambda": lam, "products": len(ids), "baskets": x.shape[0]}
    for name, seconds, b in rows:
        out[name] = {
            "hit_rate@2": round(ease.hit_rate(b, test, 2), 4),
            "hit_rate@5": round(ease.hit_rate(b, test, 5), 4),
            "fit_seconds": round(seconds, 1),
        }
        print(name, out[name], file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
