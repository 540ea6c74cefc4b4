"""Redis: the first answer of each (cart, offer token) pair redeemed, one key per pair."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from offer_service.exceptions import StoreError
from offer_service.storage.redis.client import RedisBase
from offer_service.storage.redis.keys import StoreKeys
from offer_service.storage.redis.scripts.redemptions import REMEMBER_REDEMPTIONS


class RedisRedemptions(RedisBase):
    """The RedemptionStore part of the Store protocol."""

    async def remember_redemptions(
        self, store_id: str, answers: Mapping[str, tuple[bytes, int] | None], now_ms: int
    ) -> dict[str, tuple[bytes, bool]]:
        k = StoreKeys(store_id)
        keys = list(answers)
        args: list[Any] = []
        for key in keys:
            given = answers[key]
            if given is None:
                args += [k.redemption(key), b"", "0"]  # read only
                continue
            answer, expires_ms = given
            # An answer already past its expiry is still kept a moment: SET refuses a TTL of 0.
            args += [k.redemption(key), answer, str(max(expires_ms - now_ms, 1))]
        kept = await self._script("remember redemptions", REMEMBER_REDEMPTIONS, [k.record], args)
        if kept is None:
            raise StoreError(f"unknown store {store_id!r}")
        return {
            key: (bytes(answer), new == 1)
            for key, answer, new in zip(keys, kept[::2], kept[1::2], strict=True)
            if answer is not None
        }
