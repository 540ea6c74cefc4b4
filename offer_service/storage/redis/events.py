"""A store's events on Redis: recorded into a stream, aggregated by a consumer group.

`record_events` runs one Lua script per batch: for each event, the dedupe check (a key per event
id that lives a day), the append to the store's stream and the visitor's signals (which the
frequency cap reads on the very next request) happen together or not at all, and the script
answers which events were new. With AOF on, the stream entry reaches the append-only file within
about two seconds of the reply; what was acknowledged in that moment and lost with a killed Redis
is sent again once it restarts (`recent.py`).

Counters and the event log that `iter_events` reads are written by the aggregator: a consumer
group reads the stream (at least once) and a script acknowledges and counts each entry in one
step, so an entry delivered twice is counted once; the event id is marked counted as well, so
even the same event appended twice would count once. Entries left pending by a consumer that
died are claimed with XAUTOCLAIM; an entry that keeps failing goes to a dead-letter stream after
`MAX_DELIVERIES`; trimming never passes an entry some group has not acknowledged.

The aggregator runs inside `serve` and as `offer-service worker`. `event_counters` and
`iter_events` first run one aggregation pass themselves, taking over pending entries whatever
their age, so what they return includes every event recorded before the call, whether or not a
worker is running (the SQLite backend's semantics).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from redis.exceptions import ResponseError

from offer_service.domain.events import StoredEvent
from offer_service.domain.orders import AcceptedOffer
from offer_service.domain.traffic import match_window_ms
from offer_service.exceptions import StoreError
from offer_service.storage.codec import counter_key, event_row, load_event
from offer_service.storage.health import AggregationLag
from offer_service.storage.redis import keys
from offer_service.storage.redis.client import RedisBase, chunks
from offer_service.storage.redis.keys import GROUP, StoreKeys
from offer_service.storage.redis.lag import aggregation_lag
from offer_service.storage.redis.recent import Acknowledged, server_run_id
from offer_service.storage.redis.scripts.events import (
    APPLY_EVENTS,
    DEAD_LETTER,
    EXPIRE_EVENT_LOG,
    RECORD_EVENTS,
    TRIM_EVENTS,
)
from offer_service.types import DAY_MS, now_ms

# Events recorded, entries counted, and stream or event log entries removed per script call: a
# script holds Redis for as long as it runs, and the request path's reads wait at most 100 ms.
# On a backlog of 100,000 events (load_tests/script_times.py, docs/performance.md), 500 entries
# counted a call took 14-20 ms at the median, 100 take 3-4 ms; 200 events recorded a call 5 ms,
# 50 take 1.2 ms; one trim of the whole backlog 13 ms, growing with it.
EVENTS_PER_SCRIPT = 50
READ_COUNT = 500
APPLY_CHUNK = 100
TRIM_CHUNK = 5000
MALFORMED = "malformed entry: an event needs the fields i, r, c and e"

log = logging.getLogger(__name__)


class RedisEvents(RedisBase):
    """The EventStore part of the Store protocol, and the aggregator's steps (EventStreams)."""

    # Drains run by readers (event_counters, iter_events) use this consumer name.
    reader_consumer = "reader"

    def __init__(self, url: str, *, pool_size: int | None = None) -> None:
        super().__init__(url, pool_size=pool_size)
        self.acknowledged = Acknowledged()

    async def record_events(
        self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int
    ) -> list[bool]:
        fresh = await self._record(store_id, events, dedupe_since_ms)
        self.acknowledged.add(store_id, events, dedupe_since_ms)
        return fresh

    async def resend_if_restarted(self) -> int:
        """Send again the events acknowledged in the last seconds when the server restarted
        since the last check (it may have lost them); the events sent."""
        started = time.monotonic()
        server = await self._write(
            "check the server's run id", lambda c: server_run_id(c, self.cluster)
        )
        previous = self.acknowledged.server
        if server == previous:
            self.acknowledged.checked(server, started)
            return 0
        batches = self.acknowledged.kept()
        for batch in batches:
            await self._record(batch.store_id, batch.events, batch.dedupe_since_ms)
        self.acknowledged.sent_again(batches, time.monotonic())
        self.acknowledged.server = server
        sent = sum(len(batch.events) for batch in batches)
        if previous is not None:
            log.warning(
                "Redis restarted: sent the %d events acknowledged in the last %.0f s again "
                "(a killed Redis can lose its last writes; duplicates are dropped)",
                sent,
                self.acknowledged.retain_s,
            )
        return sent

    async def _record(
        self, store_id: str, events: Sequence[StoredEvent], dedupe_since_ms: int
    ) -> list[bool]:
        k = StoreKeys(store_id)
        head = [
            k.prefix,
            GROUP,
            str(dedupe_since_ms),
            str(keys.EVENT_SEEN_TTL_MS),
            str(keys.IMPRESSION_WINDOW_MS),
            str(keys.VISITOR_TTL_S),
        ]
        fresh: list[bool] = []
        for batch in chunks(events, EVENTS_PER_SCRIPT):
            args: list[Any] = list(head)
            for e in batch:
                args += [
                    e.id,
                    str(e.received_ms),
                    orjson.dumps(counter_key(e)),
                    # The script appends the flag (it may decide it) and the closing bracket.
                    orjson.dumps(event_row(e, None)[:-1])[:-1],
                    e.visitor_id or "",
                    e.type,
                    e.product_id,
                    str(e.ts_ms),
                    e.offer_id,
                    e.flag or "",
                    str(match_window_ms(e.surface)),
                ]
            flags = await self._script(
                "record events",
                RECORD_EVENTS,
                [k.events],
                args,
                deadline_s=self.events_timeout_s,  # then the spool takes them
                breaker=True,
            )
            fresh.extend(bool(flag) for flag in flags)
        return fresh

    async def event_counters(self, store_id: str) -> dict[tuple[str, str, str, str, str], int]:
        await self.drain(store_id)
        k = StoreKeys(store_id)
        raw = await self._write("read event counters", lambda c: c.hgetall(k.counters))
        out: dict[tuple[str, str, str, str, str], int] = {}
        for field, n in raw.items():
            surface, kind, product_id, arm, event_type = orjson.loads(field)
            out[(surface, kind, product_id, arm, event_type)] = int(n)
        return out

    async def iter_events(
        self,
        store_id: str,
        since_ms: int,
        until_ms: int,
        types: frozenset[str] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        await self.drain(store_id)
        # Read in pages, each a round trip that gives the event loop back.
        async for member, _ in self._score_range(StoreKeys(store_id).event_log, since_ms, until_ms):
            row = orjson.loads(member.split(b" ", 1)[1])
            if types is None or row[1] in types:
                yield load_event(row)

    async def iter_accepts(
        self, store_id: str, since_ms: int, until_ms: int
    ) -> AsyncIterator[AcceptedOffer]:
        log = StoreKeys(store_id).accept_log
        async for member, at_ms in self._score_range(log, since_ms, until_ms):
            order_hex, product_hex, charge_id = member.decode().split(" ", 2)
            yield AcceptedOffer(
                bytes.fromhex(order_hex).decode(),
                bytes.fromhex(product_hex).decode(),
                charge_id,
                at_ms,
            )

    # the aggregator's steps

    async def store_ids(self) -> list[str]:
        """Every store's id (the streams the aggregator walks)."""
        members = await self._write("list stores", lambda c: c.smembers(keys.STORES))
        return sorted(m.decode() for m in members)

    async def aggregation_lag(self, store_id: str) -> AggregationLag:
        """How far the aggregators are behind on this store's events (for the metrics)."""
        stream = StoreKeys(store_id).events
        return await self._read("read the aggregation lag", lambda c: aggregation_lag(c, stream))

    async def drain(self, store_id: str) -> int:
        """Count everything recorded so far: new entries, and pending ones of any age."""
        counted = await self.aggregate(store_id, self.reader_consumer)
        return counted + await self.reclaim(store_id, self.reader_consumer, min_idle_ms=0)

    async def aggregate(self, store_id: str, consumer: str, *, count: int = READ_COUNT) -> int:
        """Read entries never delivered to any consumer and count them; the number counted."""
        k = StoreKeys(store_id)
        counted = 0
        while True:
            reply = await self._read_group(k, consumer, count)
            ids = [entry_id for _, entries in reply for entry_id, _ in entries]
            if not ids:
                return counted
            counted += await self._apply(k, ids)
            if len(ids) < count:
                return counted

    async def _read_group(self, k: StoreKeys, consumer: str, count: int) -> Any:
        def read(c: Any) -> Any:
            return c.xreadgroup(GROUP, consumer, {k.events: ">"}, count=count)

        try:
            return await self._write("read the event stream", read)
        except StoreError as exc:
            if "NOGROUP" not in str(exc):
                raise
        # The stream or its group is missing (a store that never had an event, or data lost
        # with a Redis that ran without persistence): create both, from the first entry.
        await self._write("create the consumer group", lambda c: self._create_group(c, k))
        return await self._write("read the event stream", read)

    @staticmethod
    async def _create_group(c: Any, k: StoreKeys) -> None:
        try:
            await c.xgroup_create(k.events, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _apply(self, k: StoreKeys, ids: Sequence[bytes | str]) -> int:
        counted = 0
        for chunk in chunks(ids, APPLY_CHUNK):
            results = await self._script(
                "count events", APPLY_EVENTS, [k.events], [k.prefix, GROUP, *chunk]
            )
            counted += sum(1 for r in results if r == 1)
        return counted

    async def reclaim(
        self,
        store_id: str,
        consumer: str,
        *,
        min_idle_ms: int = keys.RECLAIM_IDLE_MS,
        max_deliveries: int = keys.MAX_DELIVERIES,
    ) -> int:
        """Dead-letter entries delivered `max_deliveries` times; claim the other pending entries
        idle at least `min_idle_ms` (their consumer died) and count them."""
        k = StoreKeys(store_id)
        await self._dead_letter(k, min_idle_ms, max_deliveries)
        counted, start = 0, "0-0"
        while True:

            def claim(c: Any, start: str = start) -> Any:
                return c.xautoclaim(
                    k.events, GROUP, consumer, min_idle_ms, start_id=start, count=READ_COUNT
                )

            try:
                reply = await self._write("claim pending events", claim)
            except StoreError as exc:
                if "NOGROUP" in str(exc) or "no such key" in str(exc):
                    return counted
                raise
            next_start, claimed = reply[0], reply[1]
            ids = [entry_id for entry_id, _ in claimed]
            if ids:
                counted += await self._apply(k, ids)
            if next_start in (b"0-0", "0-0"):
                return counted
            start = next_start.decode() if isinstance(next_start, bytes) else next_start

    async def _dead_letter(self, k: StoreKeys, min_idle_ms: int, max_deliveries: int) -> None:
        start = "-"
        while True:

            def pending(c: Any, start: str = start) -> Any:
                return c.xpending_range(
                    k.events, GROUP, min=start, max="+", count=READ_COUNT, idle=min_idle_ms
                )

            try:
                rows = await self._write("read pending events", pending)
            except StoreError as exc:
                if "NOGROUP" in str(exc) or "no such key" in str(exc):
                    return
                raise
            for row in rows:
                if row["times_delivered"] >= max_deliveries:
                    await self._script(
                        "dead-letter an event",
                        DEAD_LETTER,
                        [k.events, k.dead_letters],
                        [GROUP, row["message_id"], str(row["times_delivered"]), MALFORMED],
                    )
            if len(rows) < READ_COUNT:
                return
            last = rows[-1]["message_id"]
            start = "(" + (last.decode() if isinstance(last, bytes) else last)

    async def trim_events(self, store_id: str) -> int:
        """Drop stream entries every group has acknowledged, and events older than the event
        log's retention (`event_log_days`, when set); the stream entries dropped."""
        k = StoreKeys(store_id)
        if self.event_log_days > 0:
            oldest = now_ms() - self.event_log_days * DAY_MS
            while await self._script(
                "expire old events", EXPIRE_EVENT_LOG, [k.event_log], [oldest, TRIM_CHUNK]
            ):
                pass
        trimmed, more = 0, 1
        while more:
            removed, more = await self._script(
                "trim the event stream", TRIM_EVENTS, [k.events], [TRIM_CHUNK]
            )
            trimmed += int(removed)
        return trimmed

    async def drop_idle_consumers(self, store_id: str, idle_ms: int = keys.CONSUMER_IDLE_MS) -> int:
        """Forget consumers (processes long gone) that hold no pending entries."""
        k = StoreKeys(store_id)
        try:
            consumers = await self._write(
                "list consumers", lambda c: c.xinfo_consumers(k.events, GROUP)
            )
        except StoreError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc):
                return 0
            raise
        dropped = 0
        for consumer in consumers:
            if consumer["pending"] == 0 and consumer["idle"] >= idle_ms:
                name = consumer["name"]
                await self._do("drop a consumer", "xgroup_delconsumer", k.events, GROUP, name)
                dropped += 1
        return dropped

    async def dead_letters(self, store_id: str) -> list[dict[str, str]]:
        """The dead-letter stream of a store, oldest first (for operators and tests)."""
        k = StoreKeys(store_id)
        entries = await self._write("read dead letters", lambda c: c.xrange(k.dead_letters))
        return [
            {f.decode(): v.decode(errors="replace") for f, v in fields.items()}
            for _, fields in entries
        ]
