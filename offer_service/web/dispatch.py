"""The hot path's seam: which requests skip Starlette's stack, and how they are answered."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from offer_service.web.endpoints.common import json_response
from offer_service.web.telemetry import Answered, AnswerNow, Telemetry

HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    """The router's 404 and 405 as API errors. Every other error a client is told of reaches
    the telemetry's frame, whichever way the request went (see Telemetry)."""
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    message = "No route matches this path." if exc.status_code == 404 else str(exc.detail)
    return json_response(
        {"error": {"code": code, "message": message, "details": []}},
        exc.status_code,
        dict(exc.headers) if exc.headers else None,
    )


class Dispatch:
    """Where every HTTP request of the app starts. A request for one of the `fast` routes (the
    hot path), matched on its exact path and method, is answered by that route's endpoint
    straight away: no router scan, no middleware stack, no exception layers (the scope gets what
    the router would have set). Every other request goes through Starlette. Both are answered
    within `telemetry`, which also answers their errors."""

    def __init__(self, telemetry: Telemetry, fast: Sequence[Route]) -> None:
        self.telemetry = telemetry
        self._fast = {
            (method, route.path): route for route in fast for method in route.methods or ()
        }
        # The GET routes that can answer without a coroutine (their app's `now`).
        self._now: dict[str, tuple[str, AnswerNow]] = {
            route.path: (route.path, route.app.now)
            for route in fast
            if "GET" in (route.methods or ()) and hasattr(route.app, "now")
        }

    def answer_now(self, scope: Scope, client: str) -> Answered | None:
        """The 200 of this HTTP request, headers and body, when its route answers it without a
        coroutine (see `Telemetry.answered_now`); None when it takes the ASGI way. `client`:
        the client's address, as the scope will say once any proxy header is applied."""
        if scope["method"] != "GET" or scope.get("root_path"):
            return None
        found = self._now.get(scope["path"])
        if found is None:
            return None
        return self.telemetry.answered_now(scope, client, *found)

    def fast(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None] | None:
        """The answer of this HTTP request by its fast route; None when it has none."""
        if scope.get("root_path"):
            return None
        route = self._fast.get((scope["method"], scope["path"]))
        if route is None:
            return None
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        return self.telemetry.frame(scope, receive, send, route.app)

    def routed(self, app: ASGIApp) -> ASGIApp:
        """Starlette middleware (innermost but for its exception layer): a routed request
        answered within the same telemetry as the fast ones."""
        telemetry = self.telemetry

        async def framed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            await telemetry.frame(scope, receive, send, app)

        return framed


class OfferApp(Starlette):
    """Starlette, entered through a Dispatch: a fast route's request is answered before
    Starlette's stack (and its ServerErrorMiddleware, whose work the telemetry's JSON 500
    already does), every other one by the stack, within the same telemetry."""

    def __init__(self, dispatch: Dispatch, **kwargs: Any) -> None:
        middleware = [Middleware(dispatch.routed), *kwargs.pop("middleware", ())]
        super().__init__(
            middleware=middleware, exception_handlers={HTTPException: _http_error}, **kwargs
        )
        self.dispatch = dispatch
        # For the server's protocol (connections.py): a request answered in the turn it arrived.
        self.answer_now = dispatch.answer_now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            answer = self.dispatch.fast(scope, receive, send)
            if answer is not None:
                scope["app"] = self
                await answer
                return
        await super().__call__(scope, receive, send)
