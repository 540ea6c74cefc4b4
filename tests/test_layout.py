"""The package layout's rules: what each layer may import, no cycles, modules of a readable size."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("offer_service", "offer_service_tools")

# What each layer may import from the service (besides itself). The pure layers know nothing of
# storage, the web or the serving machinery; storage knows the domain and nothing above it.
BASE = {"offer_service.types", "offer_service.exceptions"}
# What each layer may import from the service besides itself, lowest layer first: a layer knows
# only those beneath it. The pure layers know nothing of storage, the web or serving; storage
# knows the domain and nothing above it; only web/ (and app.py, cli.py) sits on everything.
ALLOWED = {
    "offer_service.domain": BASE,
    "offer_service.decision": BASE | {"offer_service.domain"},
    "offer_service.importers": BASE | {"offer_service.domain"},
    "offer_service.storage": BASE | {"offer_service.domain"},
    "offer_service.templating": BASE | {"offer_service.domain"},
    "offer_service.measurement": BASE
    | {"offer_service.domain", "offer_service.storage", "offer_service.templating"},
    "offer_service.serving": BASE
    | {
        "offer_service.domain",
        "offer_service.decision",
        "offer_service.storage",
        "offer_service.measurement",
        "offer_service.settings",
    },
    "offer_service.commerce": BASE
    | {
        "offer_service.domain",
        "offer_service.decision",
        "offer_service.storage",
        "offer_service.serving",
    },
    "offer_service.journeys": BASE
    | {
        "offer_service.domain",
        "offer_service.decision",
        "offer_service.storage",
        "offer_service.serving",
        "offer_service.templating",
    },
}
# Only the process entry points may reach the tools, and only inside the command that needs them,
# so the service runs with offer_service_tools absent.
TOOLS_ALLOWED_IN = {"offer_service.app", "offer_service.cli"}
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def imported(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        yield node.module
        yield from (f"{node.module}.{alias.name}" for alias in node.names)
    elif isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)


def top_level_imports(path: Path) -> set[str]:
    """Imports run when the module is imported (not those inside functions or TYPE_CHECKING)."""
    found: set[str] = set()
    for stmt in ast.parse(path.read_text()).body:
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.dump(stmt.test):
            continue
        if isinstance(stmt, ast.Import | ast.ImportFrom | ast.If | ast.Try):
            for node in ast.walk(stmt):
                found.update(imported(node))
    return found


def all_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        found.update(imported(node))
    return found


def layer(name: str) -> str:
    return ".".join(name.split(".")[:2])


def test_no_relative_imports() -> None:
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name}:{node.lineno} imports relatively"


@pytest.mark.parametrize("lower", sorted(ALLOWED))
def test_a_lower_layer_imports_only_what_lies_beneath_it(lower: str) -> None:
    known = modules()
    for name, path in known.items():
        if layer(name) != lower:
            continue
        for target in all_imports(path):
            if target.split(".")[0] not in PACKAGES or target not in known:
                continue
            assert layer(target) == lower or layer(target) in ALLOWED[lower], (
                f"{name} imports {target}"
            )


def test_the_service_never_needs_the_tools_package() -> None:
    for name, path in modules().items():
        if not name.startswith("offer_service."):
            continue
        tools = {t for t in top_level_imports(path) if t.startswith("offer_service_tools")}
        assert not tools, f"{name} imports {sorted(tools)} when it is imported"
        if name not in TOOLS_ALLOWED_IN:
            assert not any(t.startswith("offer_service_tools") for t in all_imports(path)), name


def test_no_import_cycles_between_modules() -> None:
    known = modules()
    # A module importing its own package (`from pkg import sibling`) finds the package already
    # initialised: a package's __init__ runs before any of its modules.
    graph = {
        name: {
            t
            for t in top_level_imports(path)
            if t in known and t != name and not name.startswith(t + ".")
        }
        for name, path in known.items()
    }
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = [*trail[trail.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


BLOCK_TOOLS = "import sys; sys.modules['offer_service_tools'] = None; "
CLI_MAIN = "from offer_service.cli import main; sys.exit(main(sys.argv[1:]))"


def run_without_tools(
    *args: str, site: Path | None = None, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """`offer-service ARGS` with offer_service_tools unimportable, from `site` when given."""
    first = f"sys.path.insert(0, {str(site)!r}); " if site else ""
    code = BLOCK_TOOLS + first + CLI_MAIN
    return subprocess.Popen([sys.executable, "-c", code, *args], **kwargs)


def build_service_wheel(tmp: Path) -> Path:
    """The wheel as the Dockerfile builds it (pyproject, README, LICENSE and offer_service only),
    unpacked into a folder to import from."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "offer_service", src / "offer_service")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp / "dist"), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp / "dist").glob("offer_service-*.whl")
    site = tmp / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert not [n for n in names if n.startswith("offer_service_tools")]
        assert "offer_service/static/sdk/v1/offers.js" in names
        archive.extractall(site)
    return site


def test_the_wheel_serves_without_the_tools_package(tmp_path: Path) -> None:
    site = build_service_wheel(tmp_path)
    url = f"sqlite:///{tmp_path / 'offers.db'}"
    create = run_without_tools(
        "stores", "create", "--name", "Shop", "--origin", "https://shop.example",
        "--store-url", url, site=site, cwd=tmp_path, stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = create.communicate(timeout=60)
    assert create.returncode == 0
    keys = orjson.loads(out)
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = run_without_tools(
            "serve", "--port", str(port), "--store-url", url,
            site=site, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server never became ready"
                time.sleep(0.05)
        products = [
            {"id": p, "title": p, "url": f"https://shop.example/{p}", "price": 1000,
             "currency": "USD", "category": "c", "complements": [q]}
            for p, q in (("a", "b"), ("b", "a"))
        ]  # fmt: skip
        admin = {"Authorization": f"Bearer {keys['secret_key']}"}
        put = httpx.put(f"{base}/v1/admin/catalog", json=products, headers=admin, timeout=10)
        assert put.status_code == 200 and put.json()["upserted"] == 2
        params = {"key": keys["publishable_key"], "surface": "product_page", "product_id": "a"}
        offers = httpx.get(f"{base}/v1/offers", params=params, timeout=10)
        assert offers.status_code == 200
        # b is offered with a, as a bundle: it takes b's place on the page.
        answered = offers.json()["offers"]
        assert [(o["kind"], [i["product_id"] for i in o["items"]]) for o in answered] == [
            ("bundle", ["a", "b"])
        ]
        snippet = httpx.get(f"{base}/sdk/v1/offers.js", timeout=10)
        assert snippet.status_code == 200 and snippet.content
        assert httpx.get(f"{base}/demo/", timeout=10).status_code == 404
    finally:
        server.terminate()
        server.wait(timeout=15)
    # The server ran the wheel's code, not the checkout's.
    check = subprocess.run(
        [sys.executable, "-c",
         f"import sys; sys.path.insert(0, {str(site)!r}); import offer_service; "
         "print(offer_service.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert check.stdout.startswith(str(site))


def test_the_demo_says_the_tools_package_is_missing() -> None:
    demo = run_without_tools("demo", "--port", str(free_port()), cwd=ROOT, stderr=subprocess.PIPE)
    _, err = demo.communicate(timeout=60)
    assert demo.returncode != 0
    assert b"offer_service_tools" in err
    assert b"Traceback" not in err


def test_no_module_is_too_long_to_read() -> None:
    for name, path in modules().items():
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{name} has {lines} lines (split it by concern)"
