"""The offer-service command line, run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from offer_service.storage.redis.keys import StoreKeys
from tests.redis_servers import RedisServer, opened_redis

CLI = [sys.executable, "-m", "offer_service.cli"]


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def create_store(tmp_path: Path) -> dict[str, str]:
    r = run(
        "stores",
        "create",
        "--name",
        "Shop",
        "--origin",
        "https://shop.example",
        "--store-url",
        f"sqlite:///{tmp_path}/o.db",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    data: dict[str, str] = json.loads(r.stdout)
    return data


def import_catalog(
    tmp_path: Path, keys: dict[str, str], file: Path
) -> subprocess.CompletedProcess[str]:
    """`import catalog` of `file` into the store `create_store` made."""
    url = f"sqlite:///{tmp_path}/o.db"
    return run(
        "import",
        "catalog",
        str(file),
        "--store",
        keys["store_id"],
        "--store-url",
        url,
        cwd=tmp_path,
    )


def test_stores_create_prints_the_keys(tmp_path: Path) -> None:
    keys = create_store(tmp_path)
    assert set(keys) == {"store_id", "publishable_key", "secret_key", "webhook_secret"}
    assert keys["publishable_key"].startswith("pk_")
    assert keys["secret_key"].startswith("sk_")
    assert keys["webhook_secret"].startswith("whsec_")


def test_import_catalog_keeps_good_rows_and_exits_non_zero_with_line_numbers(
    tmp_path: Path,
) -> None:
    keys = create_store(tmp_path)
    csv_file = tmp_path / "catalog.csv"
    csv_file.write_text(
        "id,title,price,currency,category\n"
        "a,Alpha,1000,USD,x\n"
        "b,Beta,not-a-price,USD,x\n"
        "c,Gamma,500,USD,x\n"
    )
    r = import_catalog(tmp_path, keys, csv_file)
    assert r.returncode == 1
    summary = json.loads(r.stdout)
    assert summary["upserted"] == 2
    assert summary["errors"][0]["line"] == 3
    assert "line 3" in r.stderr


def test_import_orders_of_online_retail_prints_a_summary(tmp_path: Path, datasets: Path) -> None:
    keys = create_store(tmp_path)
    r = run(
        "import",
        "orders",
        str(datasets / "online_retail_france.csv"),
        "--store",
        keys["store_id"],
        "--format",
        "online-retail",
        "--store-url",
        f"sqlite:///{tmp_path}/o.db",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["imported"] == summary["stats"]["orders"] > 300
    assert summary["stats"]["rows"] == 8557
    assert summary["stats"]["return_invoices"] == 69
    assert summary["returns"] > 0


def test_import_orders_counts_the_offer_tokens_it_refused(tmp_path: Path) -> None:
    keys = create_store(tmp_path)
    f = tmp_path / "orders.json"
    line = {"product_id": "a", "quantity": 1, "price": 900}
    orders = [
        {"id": "o1", "placed_at": "2026-11-25T10:00:00Z", "currency": "USD", "lines": [line]},
        {
            "id": "o2",
            "placed_at": "2026-11-25T11:00:00Z",
            "currency": "USD",
            "lines": [{**line, "offer_token": "forged.token"}, line],
        },
    ]
    f.write_text(json.dumps(orders))
    url = f"sqlite:///{tmp_path}/o.db"
    r = run(
        "import", "orders", str(f), "--store", keys["store_id"], "--store-url", url, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    # The order with a refused token is imported all the same, its line uncredited.
    assert (summary["imported"], summary["refused_tokens"]) == (2, 1)


def test_import_into_an_unknown_store_fails_clearly(tmp_path: Path) -> None:
    create_store(tmp_path)
    f = tmp_path / "c.json"
    f.write_text("[]")
    r = run(
        "import",
        "catalog",
        str(f),
        "--store",
        "st_nope",
        "--store-url",
        f"sqlite:///{tmp_path}/o.db",
        cwd=tmp_path,
    )
    assert r.returncode != 0
    assert "no store" in r.stderr


def test_stores_create_refuses_a_charge_url_that_is_not_https_to_a_public_host(
    tmp_path: Path,
) -> None:
    deployed = {k: v for k, v in os.environ.items() if k != "OFFER_ALLOW_PRIVATE_CHARGE_URLS"}
    store_url = f"sqlite:///{tmp_path}/o.db"
    for url in ("https://127.1/charge", "http://shop.example/charge", "https://u:p@x.example/c"):
        args = ("stores", "create", "--name", "Shop", "--charge-url", url, "--store-url", store_url)
        r = run(*args, cwd=tmp_path, env=deployed)
        assert r.returncode == 2, r.stdout
        assert "charge_url" in r.stderr and r.stdout == ""
    allowed = {**deployed, "OFFER_ALLOW_PRIVATE_CHARGE_URLS": "1"}
    local = "http://127.0.0.1:9000/charge"
    args = ("stores", "create", "--name", "Shop", "--charge-url", local, "--store-url", store_url)
    r = run(*args, cwd=tmp_path, env=allowed)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["store_id"]


def test_import_of_a_csv_with_a_wrong_header_fails_in_one_line(tmp_path: Path) -> None:
    keys = create_store(tmp_path)
    csv_file = tmp_path / "catalog.csv"
    csv_file.write_text("sku,name,price\na,Alpha,1000\n")
    r = import_catalog(tmp_path, keys, csv_file)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: catalog.csv: The CSV header on line 1 is neither")
    assert "unknown column 'sku'" in r.stderr and "required column 'id' is missing" in r.stderr


def test_import_reports_every_bad_field_of_a_row(tmp_path: Path) -> None:
    keys = create_store(tmp_path)
    csv_file = tmp_path / "catalog.csv"
    csv_file.write_text("id,title,price,currency,tier\na,Alpha,1000,USD,1\nb,,1.5,US,high\n")
    r = import_catalog(tmp_path, keys, csv_file)
    assert r.returncode == 1
    summary = json.loads(r.stdout)
    assert (summary["upserted"], summary["rejected"]) == (1, 1)
    assert sorted(e["field"] for e in summary["errors"]) == ["currency", "price", "tier", "title"]
    assert {e["line"] for e in summary["errors"]} == {3}
    assert r.stderr.count("catalog.csv:line 3: ") == 4, r.stderr


READING_COMMANDS = [
    ["dashboard-url", "--store", "demo"],
    ["stores", "rotate-key", "--store", "demo", "--kind", "secret"],
    ["stores", "list-visitors", "--store", "demo"],
    ["import", "catalog", "c.json", "--store", "demo"],
]


@pytest.mark.parametrize("args", READING_COMMANDS, ids=lambda a: a[0])
def test_a_command_that_uses_a_store_never_creates_one(tmp_path: Path, args: list[str]) -> None:
    """Run from a folder without the store's file (and no OFFER_STORE_URL): a one-line error
    naming the path it looked at, and no empty database left behind."""
    (tmp_path / "c.json").write_text("[]")
    env = {k: v for k, v in os.environ.items() if k != "OFFER_STORE_URL"}
    r = subprocess.run(
        [*CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 1
    missing = tmp_path.resolve() / "offer-data" / "offers.db"
    assert r.stderr == (
        f"error: no store database at {missing}; name the store's database with --store-url "
        "or OFFER_STORE_URL\n"
    )
    assert not (tmp_path / "offer-data").exists()
    r = run(*args, "--store-url", f"sqlite:///{tmp_path}/elsewhere/o.db", cwd=tmp_path)
    assert r.returncode == 1 and "--store-url" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("args", [["--help"], ["import", "--help"], ["stores", "create", "--help"]])
def test_help_works(tmp_path: Path, args: list[str]) -> None:
    assert run(*args, cwd=tmp_path).returncode == 0


def test_serve_raises_its_open_file_limit_to_the_ceiling(tmp_path: Path) -> None:
    """A process started with a low soft limit (1,024 is common) gets its hard limit, so idle
    connections meet the concurrency limit's 503 before the process runs out of descriptors."""
    resource = pytest.importorskip("resource")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit here is {hard}")
    code = (
        "import resource\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from offer_service.cli import raise_open_file_limit\n"
        "print(raise_open_file_limit())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == (hard if hard != resource.RLIM_INFINITY else 1 << 20)


def test_train_an_empty_store_says_there_is_nothing_to_learn(tmp_path: Path) -> None:
    keys = create_store(tmp_path)
    r = run(
        "train", "--store", keys["store_id"], "--store-url", f"sqlite:///{tmp_path}/o.db",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["products"] == 0
    assert "no order of two or more products" in r.stderr
    assert "best sellers" in r.stderr


def test_train_after_an_import_reports_its_steps_on_stderr(tmp_path: Path, datasets: Path) -> None:
    keys = create_store(tmp_path)
    url = f"sqlite:///{tmp_path}/o.db"
    france = str(datasets / "online_retail_france.csv")
    r = run(
        "import", "orders", france, "--store", keys["store_id"], "--format", "online-retail",
        "--store-url", url, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run("train", "--store", keys["store_id"], "--store-url", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["products"] > 1000 and summary["lambda"] > 0
    assert summary["title_weight"] in (0, 3, 10, 30)
    assert summary["popularity_exponent"] in (0, 0.05, 0.1, 0.15)
    assert "choosing lambda" in r.stderr and "writing" in r.stderr
    r = run("train", "--store", "st_nope", "--store-url", url, cwd=tmp_path)
    assert r.returncode != 0 and "no store" in r.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--drain-seconds", "-1"], {}, "OFFER_DRAIN_SECONDS must be 0 or a positive number"),
        ([], {"OFFER_KEEP_ALIVE_TIMEOUT": "0"}, "OFFER_KEEP_ALIVE_TIMEOUT must be a positive"),
    ],
)
def test_serve_refuses_a_wrong_setting_in_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    r = run(
        "serve",
        "--store-url",
        f"sqlite:///{tmp_path}/o.db",
        *args,
        cwd=tmp_path,
        env={**os.environ, **env},
    )
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: {message}"), r.stderr
    assert "Traceback" not in r.stderr


def test_list_visitors_fills_the_listing_of_a_redis_store_from_an_older_release(
    tmp_path: Path,
) -> None:
    async def written_before_the_listing(url: str) -> str:
        async with opened_redis(url) as store:
            record = await store.create_store("Old")
            await store.record_visitor_signal(record.id, "v1", "a", "decline", 1_000)
            k = StoreKeys(record.id)
            await store._do("forget the listing", "delete", k.visitor_ids)
            await store._do("forget the listing", "hdel", k.record, "vlisted")
            return record.id

    async def listed(url: str, store_id: str) -> tuple[str, ...] | None:
        async with opened_redis(url) as store:
            page = await store.visitor_ids(store_id, 0)
            return None if page is None else page.ids

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        store_id = asyncio.run(written_before_the_listing(server.url))
        assert asyncio.run(listed(server.url, store_id)) is None

        r = run(
            "stores", "list-visitors", "--store", store_id, "--store-url", server.url, cwd=tmp_path
        )

        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"store_id": store_id, "visitors_added": 1}
        assert asyncio.run(listed(server.url, store_id)) == ("v1",)
    finally:
        server.stop()
