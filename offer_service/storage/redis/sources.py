"""What a cold offer list reads, in two round trips: pipelines of the anchors' reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from offer_service.domain.products import Product
from offer_service.domain.records import PairCount
from offer_service.storage.codec import load_neighbors, load_product
from offer_service.storage.protocols import CandidateSources
from offer_service.storage.redis.client import RedisBase
from offer_service.storage.redis.keys import StoreKeys


class RedisSources(RedisBase):
    """`AffinityStore.candidate_sources` on Redis.

    Read one by one, a cart of three items took up to fifteen round trips (each anchor's
    neighbours, each family's ids and then its products, each category's best sellers, the
    basket counts), and a round trip costs a service process about 60 us of CPU, more than most
    of what it reads. Here: one pipeline of the anchors' lists and the basket count, then one
    of the families' products and the baskets of the anchors and their neighbours. Every key is
    in the store's slot, so each pipeline is one round trip on a cluster too.
    """

    async def candidate_sources(
        self,
        store_id: str,
        anchor_ids: Sequence[str],
        families: Sequence[str],
        categories: Sequence[str],
        *,
        neighbors: int,
        best_sellers: int,
    ) -> CandidateSources:
        k = StoreKeys(store_id)
        anchors = list(anchor_ids)
        ranked = categories if best_sellers > 0 else ()

        async def lists(c: Any) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            pipe.hget(k.record, "baskets")
            if anchors:
                pipe.hmget(k.neighbors, anchors)
            for family in families:
                pipe.smembers(k.family(family))
            for category in ranked:
                pipe.zrange(k.best_in(category), 0, best_sellers - 1, withscores=True)
            replies: list[Any] = await pipe.execute()
            return replies

        baskets, *rest = await self._read("read an offer list's sources", lists)
        data = rest.pop(0) if anchors else []
        near: dict[str, list[PairCount]] = {
            a: load_neighbors(d, neighbors) if d is not None and neighbors > 0 else []
            for a, d in zip(anchors, data, strict=True)
        }
        member_ids = {f: sorted(m.decode() for m in rest.pop(0)) for f in families}
        best = {c: [(pid.decode(), -int(score)) for pid, score in rest.pop(0)] for c in ranked}
        counted = sorted(set(anchors) | {pc.product_id for pcs in near.values() for pc in pcs})
        members, counts = await self._second(k, member_ids, counted)
        return CandidateSources(
            neighbors=near,
            family_members=members,
            best_sellers={c: best.get(c, []) for c in categories},
            basket_total=int(baskets) if baskets is not None else 0,
            basket_counts=counts,
        )

    async def _second(
        self, k: StoreKeys, member_ids: dict[str, list[str]], counted: list[str]
    ) -> tuple[dict[str, list[Product]], dict[str, int]]:
        """The families' products and the baskets of `counted`, in one round trip."""
        wanted = sorted({pid for ids in member_ids.values() for pid in ids})
        if not wanted and not counted:
            return {f: [] for f in member_ids}, {}

        async def read(c: Any) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            if wanted:
                pipe.hmget(k.products, wanted)
            if counted:
                pipe.zmscore(k.best, counted)
            replies: list[Any] = await pipe.execute()
            return replies

        replies = await self._read("read an offer list's products", read)
        values = replies.pop(0) if wanted else []
        scores = replies.pop(0) if counted else []
        found = {
            pid: load_product(v) for pid, v in zip(wanted, values, strict=True) if v is not None
        }
        members = {f: [found[pid] for pid in ids if pid in found] for f, ids in member_ids.items()}
        counts = {
            pid: -int(score)
            for pid, score in zip(counted, scores, strict=True)
            if score is not None
        }
        return members, counts
