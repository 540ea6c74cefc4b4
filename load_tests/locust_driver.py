"""bench.py's load generator when wrk is not installed: Locust's FastHttpUser sending a Plan.

Slower than wrk (Python, one core), so a fast baseline may be limited by the generator rather
than the server; bench.py says which generator it used. Prints one JSON line: bench.Load's fields.

    python load_tests/locust_driver.py --host URL --plan plan.json --users 50 --seconds 10
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, constant, constant_throughput, task
from locust.env import Environment

EVENTS_PER_BATCH = 20


def build_user(plan: dict[str, Any], users: int) -> type[FastHttpUser]:
    paths: list[str] = plan["paths"]
    counter = itertools.count()
    batches = itertools.count()
    accepted = [0]

    class Sender(FastHttpUser):
        wait_time = constant_throughput(plan["rate"] / users) if plan["rate"] else constant(0)

        @task
        def send(self) -> None:
            if not plan["events_key"]:
                self.client.get(random.choice(paths), name="get")
                return
            now = int(time.time() * 1000)
            visitor = f"ev-{next(batches) % plan['visitors']}"  # a batch is one page view's
            events = []
            for _ in range(EVENTS_PER_BATCH):
                n = next(counter)
                events.append(
                    {
                        "id": str(uuid.uuid4()),
                        "type": "impression",
                        "token": plan["tokens"][n % len(plan["tokens"])],
                        "ts": now,
                        "visitor_id": visitor,
                    }
                )
            body = json.dumps({"key": plan["events_key"], "events": events})
            with self.client.post(
                "/v1/events",
                data=body,
                headers={"Content-Type": "text/plain;charset=UTF-8"},
                name="events",
                catch_response=True,
            ) as response:
                if response.status_code == 202 and b'"accepted":20,' in (response.content or b""):
                    accepted[0] += 1

    Sender.accepted = accepted  # type: ignore[attr-defined]
    return Sender


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    plan = json.loads(args.plan.read_text())
    user = build_user(plan, args.users)
    env = Environment(user_classes=[user], host=args.host)
    runner = env.create_local_runner()
    runner.start(args.users, spawn_rate=args.users)
    gevent.sleep(1.0)  # let every user connect before counting
    env.stats.reset_all()
    user.accepted[0] = 0  # type: ignore[attr-defined]
    started = time.monotonic()
    gevent.sleep(args.seconds)
    elapsed = time.monotonic() - started
    total = env.stats.total
    runner.quit()

    def ms(q: float) -> float:
        return float(total.get_response_time_percentile(q) or 0)

    print(
        json.dumps(
            {
                "requests": total.num_requests,
                "seconds": elapsed,
                "p50_ms": ms(0.5),
                "p90_ms": ms(0.9),
                "p99_ms": ms(0.99),
                "p999_ms": ms(0.999),
                "max_ms": float(total.max_response_time or 0),
                "errors": 0,  # Locust counts connection errors among its failures
                "bad_status": total.num_failures,
                "accepted": user.accepted[0],  # type: ignore[attr-defined]
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
