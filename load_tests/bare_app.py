"""The baseline for bench.py: a bare Starlette endpoint that serialises a fixed answer with orjson.

It does what any JSON endpoint of the framework does and nothing else: route, serialise a dict
the size of the service's own answer (read from the file named by BARE_PAYLOAD), respond with the
headers the service sent with that answer (BARE_HEADERS, a JSON list of [name, value] pairs; a
fresh `x-request-id` per response, as the service gives). The response is the same bytes as the
service's, so the comparison is of the work behind them. No middleware, no validation, no store.
Served by the same uvicorn, with the same flags:

    BARE_PAYLOAD=answer.json BARE_HEADERS=headers.json uvicorn bare_app:create_app --factory
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# Set by Starlette's Response or by uvicorn for every response, or about the connection rather
# than the response (a client that closes its connection is told so): not taken from the file.
OWN_HEADERS = frozenset(
    ("content-length", "content-type", "date", "server", "connection", "keep-alive")
)
REQUEST_ID = "x-request-id"


def create_app() -> Starlette:
    payload = orjson.loads(Path(os.environ["BARE_PAYLOAD"]).read_bytes())
    named = os.environ.get("BARE_HEADERS")
    pairs = orjson.loads(Path(named).read_bytes()) if named else []
    fixed = {name: value for name, value in pairs if name not in OWN_HEADERS}
    request_id = fixed.pop(REQUEST_ID, None)
    prefix = request_id.rpartition("_")[0] + "_" if request_id else None
    ids = itertools.count(1)

    async def offers(request: Request) -> Response:
        headers = fixed if prefix is None else {**fixed, REQUEST_ID: prefix + str(next(ids))}
        return Response(orjson.dumps(payload), headers=headers, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(routes=[Route("/v1/offers", offers), Route("/healthz", healthz)])
