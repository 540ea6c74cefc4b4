"""Redis: what each visitor did with offers, read in one script, and which visitors changed."""

from __future__ import annotations

import re
import secrets

from offer_service.domain.records import (
    EMPTY_VISITOR,
    SignalKind,
    VisitorChanges,
    VisitorIds,
    VisitorState,
)
from offer_service.storage.codec import subjects, visitor_subject
from offer_service.storage.protocols import VISITOR_CHANGES_MAX, VISITOR_IDS_PAGE
from offer_service.storage.redis import keys
from offer_service.storage.redis.client import Client, RedisBase, run_script
from offer_service.storage.redis.keys import LASTING_SCORE, StoreKeys
from offer_service.storage.redis.scripts.signals import RECORD_SIGNAL, VISITOR_STATE


class RedisSignals(RedisBase):
    """The SignalStore part of the Store protocol."""

    async def visitor_changes(self, store_id: str, after: str | None) -> VisitorChanges | None:
        key = StoreKeys(store_id).visitor_changes
        if after is None:
            last = await self._read("read visitor changes", lambda c: c.xrevrange(key, count=1))
            return VisitorChanges(last[0][0].decode() if last else "0-0")
        # One more than is listed: more than that, and every visitor may have changed.
        rows = await self._read(
            "read visitor changes",
            lambda c: c.xrange(key, min="(" + after, count=VISITOR_CHANGES_MAX + 1),
        )
        if not rows:
            return VisitorChanges(after)
        cursor = rows[-1][0].decode()
        if len(rows) > VISITOR_CHANGES_MAX:
            return VisitorChanges(cursor, None)
        return VisitorChanges(cursor, frozenset(fields[b"v"].decode() for _, fields in rows))

    async def visitor_ids(
        self, store_id: str, since_ms: int, page: str | None = None
    ) -> VisitorIds | None:
        k = StoreKeys(store_id)
        cursor = None
        if page is None:
            # A store created before 'vstate' was kept may have visitors it does not list.
            listed = await self._write("list visitors", lambda c: c.hget(k.record, "vlisted"))
            if listed is None:
                return None
            changes = await self.visitor_changes(store_id, None)
            cursor = None if changes is None else changes.cursor
        # SCAN's promise is what the listing needs: every member present from its start to its
        # end is returned (some maybe twice); members added meanwhile are in the change feed.
        at, rows = await self._write(
            "list visitors",
            lambda c: c.zscan(k.visitor_ids, int(page or 0), count=VISITOR_IDS_PAGE),
        )
        ids = tuple(member.decode() for member, score in rows if score >= since_ms)
        return VisitorIds(ids, str(at) if at else None, cursor)

    async def list_visitors(self, store_id: str, now_ms: int) -> int:
        """Fill the store's 'vstate' from its visitors' keys, then mark it complete: for a store
        written by a release that did not keep it (run once every process runs this one). A
        visitor with only impressions or clicks is scored `now_ms` (it leaves the listing 30 days
        later at the latest). The number of visitors added."""
        k = StoreKeys(store_id)
        await self._require_store(k, store_id)
        # Each family's keys are its key for the visitor id "" followed by the id.
        families = {
            k.declined(""): LASTING_SCORE,
            k.accepted(""): LASTING_SCORE,
            k.bought(visitor_subject("")): LASTING_SCORE,
            k.returned(visitor_subject("")): LASTING_SCORE,
            k.impressions(""): str(now_ms),
            k.clicks(""): str(now_ms),
        }

        async def fill(c: Client) -> int:
            added = 0
            for family, score in families.items():
                pattern = re.sub(r"([*?\[\]\\])", r"\\\1", family) + "*"
                batch: dict[str, str] = {}
                async for key in c.scan_iter(match=pattern, count=1000):
                    batch[key.decode()[len(family) :]] = score
                    if len(batch) >= VISITOR_IDS_PAGE:
                        added += await c.zadd(k.visitor_ids, batch, gt=True)
                        batch = {}
                if batch:
                    added += await c.zadd(k.visitor_ids, batch, gt=True)
            await c.hset(k.record, "vlisted", "1")
            return added

        return await self._write("list visitors", fill)

    async def visitor_state(
        self, store_id: str, visitor_id: str | None, customer_id: str | None, since_ms: int
    ) -> VisitorState:
        if not visitor_id and not customer_id:
            return EMPTY_VISITOR
        k = StoreKeys(store_id)
        names = subjects(customer_id, visitor_id)
        state_keys = [k.bought(name) for name in names] + [k.returned(name) for name in names]
        if visitor_id:
            state_keys += [
                k.declined(visitor_id),
                k.accepted(visitor_id),
                k.impressions(visitor_id),
                k.clicks(visitor_id),
            ]
        # One round trip and one reply: the script reads every key (all in the store's slot)
        # and counts the impressions that fall under the frequency cap.
        purchases, returned, declined, accepted, shown = await self._read(
            "read visitor state",
            lambda c: run_script(c, VISITOR_STATE, state_keys, [len(names), since_ms]),
        )
        return VisitorState(
            purchased={
                purchases[i].decode(): int(purchases[i + 1]) for i in range(0, len(purchases), 2)
            },
            returned=frozenset(pid.decode() for pid in returned),
            declined=frozenset(pid.decode() for pid in declined),
            accepted=frozenset(pid.decode() for pid in accepted),
            impressions={shown[i].decode(): int(shown[i + 1]) for i in range(0, len(shown), 2)},
        )

    async def record_visitor_signal(
        self, store_id: str, visitor_id: str, product_id: str, kind: SignalKind, at_ms: int
    ) -> None:
        k = StoreKeys(store_id)
        await self._script(
            "record a visitor signal",
            RECORD_SIGNAL,
            [k.declined(visitor_id)],
            [
                k.prefix,
                visitor_id,
                kind,
                product_id,
                str(at_ms),
                secrets.token_hex(8),
                str(keys.IMPRESSION_WINDOW_MS),
                str(keys.VISITOR_TTL_S),
            ],
        )
