"""The baseline for bench.py: a bare Starlette endpoint that serialises a fixed answer with orjson.

It does what any JSON endpoint of the framework does and nothing else: route, serialise a dict
the size of the service's own answer (read from the file named by BARE_PAYLOAD), respond. No
middleware, no validation, no store. Served by the same uvicorn, with the same flags:

    BARE_PAYLOAD=answer.json uvicorn bare_app:create_app --factory
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create_app() -> Starlette:
    payload = orjson.loads(Path(os.environ["BARE_PAYLOAD"]).read_bytes())

    async def offers(request: Request) -> Response:
        return Response(orjson.dumps(payload), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(routes=[Route("/v1/offers", offers), Route("/healthz", healthz)])
