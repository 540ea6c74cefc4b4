"""The native catalog JSON: a list of products in the API's Product shape."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offer_service.domain.products import Product
from offer_service.importers.fields import (
    Currency,
    Identifier,
    MinorUnits,
    SafeUrl,
    Text,
    Title,
    check_currency,
    currency_parameter,
    rejections_from,
)
from offer_service.importers.json_body import JsonSource, json_list_items, with_lines
from offer_service.importers.result import ImportResult, Rejection
from offer_service.importers.seen import FirstSeen
from offer_service.types import ProductFlag


class ProductIn(BaseModel):
    """A product as merchants send it (docs/importing.md), validated strictly: JSON types only,
    money in integer minor units, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: Identifier
    title: Title
    url: SafeUrl = ""
    image_url: SafeUrl = ""
    price: MinorUnits
    currency: Currency | None = None
    cost: MinorUnits | None = None
    compare_at_price: MinorUnits | None = None
    category: Text = ""
    family: Annotated[Text, Field(min_length=1)] | None = None
    tier: Annotated[int, Field(ge=0, le=1000)] | None = None
    tags: Annotated[list[Annotated[Text, Field(min_length=1)]], Field(max_length=100)] = []
    inventory: Annotated[int, Field(ge=-(10**9), le=10**12)] | None = None
    active: bool = True
    complements: Annotated[list[Identifier], Field(max_length=100)] = []
    flags: list[ProductFlag] = []
    replenish_days: Annotated[int, Field(ge=1, le=3650)] | None = None

    def to_product(self, default_currency: str = "USD") -> Product:
        """The engine's Product; `default_currency` applies when the item named none."""
        return Product(
            id=self.id,
            title=self.title,
            price=self.price,
            currency=self.currency or check_currency(default_currency),
            url=self.url,
            image_url=self.image_url,
            category=self.category,
            cost=self.cost,
            compare_at_price=self.compare_at_price,
            family=self.family,
            tier=self.tier,
            tags=tuple(dict.fromkeys(self.tags)),
            inventory=self.inventory,
            active=self.active,
            complements=tuple(dict.fromkeys(c for c in self.complements if c != self.id)),
            flags=tuple(dict.fromkeys(self.flags)),
            replenish_days=self.replenish_days,
        )


def validate_product(
    data: Any, default_currency: str, field_names: dict[str, str] | None = None
) -> tuple[Product | None, list[Rejection]]:
    """One raw item -> a Product, or the rejections (without position) that explain why not."""
    try:
        product_in = ProductIn.model_validate(data)
    except ValidationError as exc:
        return None, rejections_from(exc, field_names=field_names)
    return product_in.to_product(default_currency), []


def duplicate_id(product_id: str, first: str) -> Rejection:
    """The later of two items with the same id is refused, so an import never silently
    keeps whichever came last."""
    return Rejection(f"id {product_id!r} was already used by {first}.", field="id")


def parse_catalog_json(raw: JsonSource, default_currency: str = "USD") -> ImportResult[Product]:
    """Parse a JSON list of products; bad items are rejected with their index (and line),
    good ones kept. Raises ValidationFailed when the body is not a JSON list."""
    result: ImportResult[Product] = ImportResult()
    result.items.extend(iter_catalog_json(raw, result, default_currency))
    return result


def iter_catalog_json(
    raw: JsonSource, result: ImportResult[Product], default_currency: str = "USD"
) -> Iterator[Product]:
    """`parse_catalog_json` one product at a time, for callers that write as they read; the
    rejections go to `result`, complete once the iterator is exhausted. A body that is not a
    JSON list is refused by the call itself, before any product. A large file (`raw` may be a
    seekable binary file) is parsed an item at a time."""
    currency = currency_parameter(default_currency)
    return _products(raw, json_list_items(raw, "products"), currency, result)


def _products(
    raw: JsonSource, items: Iterable[Any], currency: str, result: ImportResult[Product]
) -> Iterator[Product]:
    held = items if isinstance(items, list) else None
    first_index = FirstSeen()
    try:
        for index, item in enumerate(items):
            if held is not None:
                held[index] = None  # each raw item is let go once validated
            product, problems = validate_product(item, currency)
            first = None if product is None else first_index.first(product.id, index)
            if product is not None and first is not None:
                problems = [duplicate_id(product.id, f"item {first}")]
                product = None
            if product is None:
                result.reject([dataclasses.replace(p, index=index) for p in problems])
                continue
            yield product
    finally:
        first_index.close()
    result.rejected = with_lines(raw, result.rejected)
