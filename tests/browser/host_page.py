"""Small real HTTP servers for browser tests: a merchant's plain host page, and a stand-in offer
service that answers fixed offer shapes (with CORS, as the real one does) and keeps what it got."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

SDK_DIR = Path(__file__).resolve().parents[2] / "offer_service" / "static" / "sdk" / "v1"
STUB = (
    "<script>window.offers=window.offers||function(){(offers.q=offers.q||[]).push(arguments)};"
    "</script>"
)


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"


@dataclass
class Seen:
    """One request the server received: its path, query, headers and body."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


Route = Callable[[Seen], Answer]


@dataclass
class FixtureServer:
    """A threaded HTTP server on 127.0.0.1 whose routes a test sets; it records every request."""

    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    cors_origin: str | None = None
    url: str = ""

    def page(self, path: str, html: str) -> None:
        self.routes[path] = lambda _seen: Answer(200, html.encode())

    def json(self, path: str, answer: Callable[[Seen], tuple[int, Any]]) -> None:
        def route(seen: Seen) -> Answer:
            status, body = answer(seen)
            return Answer(status, json.dumps(body).encode(), "application/json")

        self.routes[path] = route

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


def _handler(server: FixtureServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                parts.path,
                {k: v[-1] for k, v in parse_qs(parts.query).items()},
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length) if length else b"",
            )
            server.seen.append(seen)
            route = server.routes.get(parts.path)
            answer = Answer(204, b"") if method == "OPTIONS" else None
            if answer is None:
                answer = route(seen) if route else Answer(404, b"not found")
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.send_header("Cache-Control", "no-store")
            if server.cors_origin:
                self.send_header("Access-Control-Allow-Origin", server.cors_origin)
                self.send_header("Access-Control-Allow-Headers", "Content-Type, Idempotency-Key")
                self.send_header("Vary", "Origin")
            self.end_headers()
            self.wfile.write(answer.body)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def do_OPTIONS(self) -> None:
            self._answer("OPTIONS")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serve(server: FixtureServer) -> Iterator[FixtureServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


def serve_sdk(server: FixtureServer) -> None:
    """Serve the built snippet and stylesheet at /sdk/v1/, as the offer service does."""
    for name, kind in (("offers.js", "text/javascript"), ("offers.css", "text/css")):
        server.routes[f"/sdk/v1/{name}"] = _file(SDK_DIR / name, kind)


def _file(path: Path, content_type: str) -> Route:
    body = path.read_bytes()
    return lambda _seen: Answer(200, body, content_type)


def host_html(service_url: str, body: str, head: str = "", key: str = "pk_demo") -> str:
    """A merchant's plain page: the queue stub, its own `head` (styles, scripts), the snippet tag
    and `body`."""
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Plain shop</title>{STUB}{head}"
        f'<script async src="{service_url}/sdk/v1/offers.js" data-key="{key}"></script>'
        f"</head><body>{body}</body></html>"
    )
