"""Operations: health, readiness, Prometheus metrics, the OpenAPI document, the snippet."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from offer_service.exceptions import NotFound, StoreError
from offer_service.web import openapi
from offer_service.web.endpoints.common import engine, json_response

IMMUTABLE = "public, max-age=31536000, immutable"
SDK_FILES = {"offers.js": "text/javascript; charset=utf-8", "offers.css": "text/css; charset=utf-8"}


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    # Told to stop: the balancer is to send nothing more, while what it sent is still served.
    if request.app.state.drain.draining:
        return json_response({"status": "draining"}, 503)
    try:
        await engine(request).store.ping()
    except StoreError:
        return json_response({"status": "unavailable"}, 503)
    return json_response({"status": "ok"})


async def metrics(request: Request) -> Response:
    text = await request.app.state.collector.scrape()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


@lru_cache(maxsize=1)
def _openapi_bytes() -> bytes:
    import orjson

    return orjson.dumps(openapi.document())


async def openapi_json(request: Request) -> Response:
    return json_response(_openapi_bytes())


@lru_cache(maxsize=8)
def sdk_file(name: str) -> bytes:
    return resources.files("offer_service").joinpath("static", "sdk", "v1", name).read_bytes()


async def sdk(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in SDK_FILES:
        raise NotFound(f"No SDK file named {name!r}.")
    try:
        body = sdk_file(name)
    except FileNotFoundError:
        raise NotFound("The snippet has not been built into this package.") from None
    headers = {"Cache-Control": IMMUTABLE, "Access-Control-Allow-Origin": "*"}
    return Response(body, headers=headers, media_type=SDK_FILES[name])
