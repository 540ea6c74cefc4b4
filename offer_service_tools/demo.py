"""The demo store: a small camera, coffee and skincare catalog with orders, so affinity is real.

Its offers come from the item model, trained when the store is set up. Keys: publishable
`pk_demo`, secret `sk_demo`, feed key `fk_demo`; every http://localhost:* and http://127.0.0.1:*
origin is allowed. Installing it twice changes nothing (products upsert,
orders de-duplicate).
"""

from __future__ import annotations

import random

from offer_service.commerce.ingest import import_orders
from offer_service.domain.orders import Order, OrderLine
from offer_service.domain.policy import RateLimits, StoreRules, rules_context
from offer_service.domain.products import Product
from offer_service.domain.records import StoreRecord
from offer_service.serving.training import train_store
from offer_service.storage.protocols import Store
from offer_service.types import DAY_MS, now_ms

DEMO_STORE_ID = "demo"
DEMO_PUBLISHABLE_KEY = "pk_demo"
DEMO_SECRET_KEY = "sk_demo"
DEMO_WEBHOOK_SECRET = "whsec_demo"
DEMO_FEED_KEY = "fk_demo"
DEMO_ORIGINS = ["http://localhost:*", "http://127.0.0.1:*"]
DEMO_FREE_SHIPPING = 5000


def _p(
    pid: str,
    title: str,
    price: int,
    cost: int,
    category: str,
    *,
    family: str | None = None,
    tier: int | None = None,
    complements: tuple[str, ...] = (),
    flags: tuple[str, ...] = (),
    compare_at: int | None = None,
    replenish_days: int | None = None,
    inventory: int | None = None,
    tags: tuple[str, ...] = (),
) -> Product:
    return Product(
        id=pid,
        title=title,
        price=price,
        currency="USD",
        url=f"/demo/products/{pid}",
        image_url=f"/demo/img/{pid}.svg",
        category=category,
        cost=cost,
        compare_at_price=compare_at,
        family=family,
        tier=tier,
        tags=tags,
        inventory=inventory,
        complements=complements,
        flags=flags,  # type: ignore[arg-type]
        replenish_days=replenish_days,
    )


CAMERA_KIT = ("sd-128", "lens-cap-52", "bag-small", "battery-np50")
COFFEE_KIT = ("grinder-burr", "filters-100", "french-press")
SERUM_KIT = ("moisturizer", "cleanser", "spf-50")

CATALOG: tuple[Product, ...] = (
    # Cameras: a three-tier family, the upsell ladder.
    _p(
        "cam-x100",
        "Camera X100",
        49900,
        31000,
        "cameras",
        family="camera-x",
        tier=1,
        complements=CAMERA_KIT,
    ),
    _p(
        "cam-x200",
        "Camera X200",
        74900,
        45000,
        "cameras",
        family="camera-x",
        tier=2,
        complements=CAMERA_KIT,
    ),
    _p(
        "cam-x300-pro",
        "Camera X300 Pro",
        119900,
        70000,
        "cameras",
        family="camera-x",
        tier=3,
        complements=CAMERA_KIT,
    ),
    _p("sd-64", "64 GB SD card", 1999, 700, "memory", family="sd-card", tier=1),
    _p("sd-128", "128 GB SD card", 2999, 1100, "memory", family="sd-card", tier=2),
    _p("sd-256", "256 GB SD card", 4999, 2000, "memory", family="sd-card", tier=3),
    _p("lens-cap-52", "52 mm lens cap", 999, 200, "camera-accessories"),
    _p("bag-small", "Camera bag", 3900, 1500, "bags", family="camera-bag", tier=1),
    _p("bag-pro", "Pro camera backpack", 7900, 3200, "bags", family="camera-bag", tier=2),
    _p("battery-np50", "Spare battery NP-50", 3499, 1400, "camera-accessories"),
    _p("tripod-travel", "Travel tripod", 5900, 2500, "tripods", family="tripod", tier=1),
    _p("tripod-pro", "Carbon tripod", 12900, 6000, "tripods", family="tripod", tier=2),
    _p(
        "lens-cleaning-kit",
        "Lens cleaning kit",
        1299,
        400,
        "camera-accessories",
        flags=("consumable",),
        replenish_days=90,
    ),
    _p(
        "strap-leather",
        "Leather camera strap",
        1500,
        900,
        "camera-accessories",
        flags=("clearance",),
        compare_at=None,
    ),
    _p("flash-mini", "Mini flash", 8900, 4000, "camera-accessories", flags=("new",)),
    # Coffee: bag sizes and a subscription on one ladder.
    _p(
        "coffee-250g",
        "House blend coffee, 250 g",
        1200,
        500,
        "coffee",
        family="house-blend",
        tier=1,
        complements=COFFEE_KIT,
        flags=("consumable",),
        replenish_days=21,
    ),
    _p(
        "coffee-500g",
        "House blend coffee, 500 g",
        2100,
        900,
        "coffee",
        family="house-blend",
        tier=2,
        complements=COFFEE_KIT,
        flags=("consumable",),
        replenish_days=30,
    ),
    _p(
        "coffee-1kg",
        "House blend coffee, 1 kg",
        3800,
        1700,
        "coffee",
        family="house-blend",
        tier=3,
        complements=COFFEE_KIT,
        flags=("consumable",),
        replenish_days=45,
    ),
    _p(
        "coffee-subscription",
        "House blend subscription, 1 kg a month",
        3400,
        1700,
        "coffee",
        family="house-blend",
        tier=4,
        complements=COFFEE_KIT,
    ),
    _p(
        "espresso-250g",
        "Espresso roast, 250 g",
        1400,
        600,
        "coffee",
        flags=("consumable",),
        replenish_days=21,
        complements=COFFEE_KIT,
    ),
    _p("grinder-burr", "Burr grinder", 8900, 4200, "coffee-gear"),
    _p("french-press", "French press", 3500, 1400, "coffee-gear"),
    _p(
        "filters-100",
        "Paper filters, 100",
        600,
        150,
        "coffee-gear",
        flags=("consumable",),
        replenish_days=60,
    ),
    _p("mug-set", "Stoneware mug set", 1800, 700, "coffee-gear", flags=("new",)),
    _p("kettle-gooseneck", "Gooseneck kettle", 5500, 2600, "coffee-gear", inventory=0),
    # Skincare: a serum in three sizes and its routine.
    _p(
        "serum-15ml",
        "Vitamin C serum, 15 ml",
        2800,
        800,
        "skincare",
        family="serum",
        tier=1,
        complements=SERUM_KIT,
        flags=("consumable",),
        replenish_days=30,
    ),
    _p(
        "serum-30ml",
        "Vitamin C serum, 30 ml",
        4800,
        1300,
        "skincare",
        family="serum",
        tier=2,
        complements=SERUM_KIT,
        flags=("consumable",),
        replenish_days=45,
    ),
    _p(
        "serum-50ml",
        "Vitamin C serum, 50 ml",
        6800,
        1900,
        "skincare",
        family="serum",
        tier=3,
        complements=SERUM_KIT,
        flags=("consumable",),
        replenish_days=60,
    ),
    _p("moisturizer", "Daily moisturizer", 3600, 1100, "skincare"),
    _p(
        "cleanser",
        "Gentle cleanser",
        2400,
        700,
        "skincare",
        flags=("consumable",),
        replenish_days=45,
    ),
    _p("spf-50", "Mineral SPF 50", 2900, 900, "skincare", flags=("new",)),
    _p(
        "jade-roller",
        "Jade face roller",
        1500,
        600,
        "skincare",
        flags=("clearance",),
        compare_at=3000,
    ),
    # Fee lines: in orders, never offered.
    _p("gift-wrap", "Gift wrap", 500, 100, "fees", flags=("fee",)),
    _p("shipping-protection", "Shipping protection", 299, 0, "fees", flags=("fee",)),
)

# Which products shoppers of each kind put in one basket, and how often (weights).
_BASKETS: tuple[tuple[tuple[str, ...], tuple[tuple[str, float], ...]], ...] = (
    (
        ("cam-x100", "cam-x200", "cam-x300-pro"),
        (
            ("sd-128", 0.6),
            ("sd-64", 0.15),
            ("sd-256", 0.2),
            ("lens-cap-52", 0.35),
            ("bag-small", 0.3),
            ("battery-np50", 0.2),
            ("tripod-travel", 0.15),
            ("lens-cleaning-kit", 0.2),
            ("strap-leather", 0.1),
            ("flash-mini", 0.08),
        ),
    ),
    # Camera owners back for gear: a spare battery goes with a card and a cleaning kit, not
    # with a second camera.
    (
        ("battery-np50", "sd-128", "lens-cleaning-kit"),
        (
            ("sd-128", 0.4),
            ("sd-64", 0.1),
            ("battery-np50", 0.35),
            ("lens-cap-52", 0.2),
            ("lens-cleaning-kit", 0.3),
            ("strap-leather", 0.15),
            ("tripod-travel", 0.1),
        ),
    ),
    (
        ("coffee-250g", "coffee-500g", "coffee-1kg", "espresso-250g"),
        (
            ("filters-100", 0.5),
            ("grinder-burr", 0.2),
            ("french-press", 0.25),
            ("mug-set", 0.15),
            ("espresso-250g", 0.2),
        ),
    ),
    (
        ("serum-15ml", "serum-30ml", "serum-50ml"),
        (("moisturizer", 0.5), ("cleanser", 0.45), ("spf-50", 0.3), ("jade-roller", 0.1)),
    ),
)


def demo_orders(count: int = 900, seed: int = 7, end_ms: int | None = None) -> list[Order]:
    """Deterministic orders over the 120 days before `end_ms`."""
    rng = random.Random(seed)
    prices = {p.id: p.price for p in CATALOG}
    end = end_ms if end_ms is not None else now_ms()
    orders = []
    for n in range(count):
        anchors, extras = _BASKETS[rng.choices((0, 1, 2, 3), weights=(4, 3, 4, 3))[0]]
        basket = {rng.choice(anchors)}
        basket.update(pid for pid, p in extras if rng.random() < p)
        if rng.random() < 0.1:
            basket.add("gift-wrap")
        lines = tuple(OrderLine(pid, 1, prices[pid]) for pid in sorted(basket))
        orders.append(
            Order(
                id=f"demo-{n:05d}",
                placed_at_ms=end - 120 * DAY_MS + (n * 120 * DAY_MS) // count,
                currency="USD",
                lines=lines,
                customer_id=f"cust-{rng.randrange(400):04d}",
            )
        )
    return orders


def demo_rules(charge_url: str | None = None) -> StoreRules:
    # The demo is what load tests and the simulator point at from one address: no throttling,
    # no event budget, no rate flags.
    limits = RateLimits.lifted()
    # The demo charges through its own endpoint, on this machine (the `demo` command sets
    # OFFER_ALLOW_PRIVATE_CHARGE_URLS for the service to call it). Shipping is free from $50:
    # a coffee or serum cart ($12-$68) is often just short of it, a camera cart far above.
    return StoreRules.model_validate(
        {
            "allowed_origins": list(DEMO_ORIGINS),
            "charge_url": charge_url,
            "rate_limits": limits,
            "free_shipping_threshold": DEMO_FREE_SHIPPING,
        },
        context=rules_context("private"),
    )


async def install_demo(store: Store, charge_url: str | None = None) -> StoreRecord:
    """Create (or refresh) the demo store with its catalog and orders."""
    record = await store.get_store(DEMO_STORE_ID)
    if record is None:
        record = await store.create_store(
            "Demo store",
            store_id=DEMO_STORE_ID,
            publishable_key=DEMO_PUBLISHABLE_KEY,
            secret_key=DEMO_SECRET_KEY,
            webhook_secret=DEMO_WEBHOOK_SECRET,
            rules=demo_rules(charge_url),
        )
    elif charge_url is not None and record.rules.charge_url != charge_url:
        record = await store.set_rules(record.id, replace_rules(record.rules, charge_url))
    await store.upsert_products(record.id, CATALOG)
    # Orders are fixed in time so a restart finds the same ids and imports nothing new.
    summary = await import_orders(store, record, demo_orders(end_ms=1_764_000_000_000), [])
    if summary.imported or not await _trained(store, record.id):
        # The shopper sees the item model's offers from the first page, as a store that ran
        # `offer-service train` would (900 orders of 33 products: well under a second).
        await train_store(store, record)
    if not await store.feed_keys(record.id):
        await store.rotate_feed_key(record.id, DEMO_FEED_KEY)
    return record


async def _trained(store: Store, store_id: str) -> bool:
    """Whether the demo's lists are the item model's (a store set up before it had none)."""
    lists = await store.neighbors(store_id, CATALOG[0].id, 1)
    return bool(lists) and lists[0].score is not None


def replace_rules(rules: StoreRules, charge_url: str) -> StoreRules:
    return rules.model_copy(update={"charge_url": charge_url})


__all__ = ["CATALOG", "demo_orders", "install_demo"]
