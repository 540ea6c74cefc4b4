"""HTTP connections: uvicorn's httptools protocol with a deadline for each request's headers,
writing each response's head and body in one piece."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, cast

from starlette.types import Scope
from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from offer_service.settings import Settings
from offer_service.web.telemetry import Answered

log = logging.getLogger("offer_service")

# What `offer-service serve` passes as uvicorn's `http` (an import string, so that each worker
# process imports the class itself).
PROTOCOL = "offer_service.web.connections:HeaderTimeoutProtocol"


@functools.cache
def header_timeout_s() -> float:
    """This process's header timeout (OFFER_HEADER_TIMEOUT), read once: uvicorn's `Config` has
    no field for it, and every worker process reads its settings from the environment."""
    return Settings.from_env().header_timeout_s


class _OneWrite:
    """A connection's transport as its responses write to it: a write is held until the next
    one, which goes out joined to it, or until the loop's next turn, whichever comes first.

    uvicorn writes a response's status line and headers as soon as the app starts the
    response, and its body in a second write: two send() calls and two TCP segments for every
    response, each send taking the kernel's TCP path (on loopback, the receiver's side too).
    Joined, a warm offers answer cost 7-13 us less system time (docs/performance.md). Nothing
    waits longer than the loop's turn it was written in, so a streamed response's head or a
    100 Continue still leaves at once. Everything else is the transport's."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def write_now(self, data: bytes) -> None:
        """Write `data` at once, after anything held."""
        held = self._held
        self._held = None
        self._transport.write(data if held is None else held + data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _answering_now(
    app: object,
) -> tuple[Callable[[Scope, str], Answered | None] | None, ProxyHeadersMiddleware | None]:
    """The app's `answer_now` (dispatch.py), looked for within uvicorn's proxy-headers
    middleware too, and that middleware when there is one."""
    proxy = app if isinstance(app, ProxyHeadersMiddleware) else None
    inner = proxy.app if proxy is not None else app
    return getattr(inner, "answer_now", None), proxy


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn closes a connection that stays idle after a response (`timeout_keep_alive`), but
    waits forever for a connection that never sends a request, or never finishes the request
    line and headers of one: each holds a file descriptor, and enough of them lock every client
    out. Here a request's line and headers must be complete within the header timeout of the
    connection opening, or of the request's first byte; otherwise the connection is closed.

    A timer per request would cost more than the rest of this (a few microseconds to arm and
    cancel on uvloop, on the hot path), so each connection has one clock that ticks every half
    timeout and closes the connection when it finds the same request's headers still awaited
    two ticks on: between 1 and 1.5 header timeouts after they began. The deadline ends where
    the app's reading starts: a body sent slowly is the route's to bound (its body limit), and
    a request in flight the concurrency limit's."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._tick: asyncio.TimerHandle | None = None
        # Whether a request's line and headers are awaited (from the connection opening or the
        # request's first byte to its last header), and how many requests got that far.
        self._awaiting_headers = True
        self._headers_done = 0
        # The ticks that found the same request's headers awaited; the connection opening counts
        # as one, so a connection that never sends anything is closed one timeout after it opens.
        self._ticks_awaiting = 1
        self._headers_done_at_tick = 0
        self._now, self._proxy = _answering_now(self.app)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The protocol and each request's cycle write through it; flow control (reading paused
        # and resumed) keeps the transport itself.
        self.transport = cast(asyncio.Transport, _OneWrite(transport, self.loop))
        self._tick = self.loop.call_later(header_timeout_s() / 2, self._on_tick)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._headers_done += 1
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        """Answer the request in the turn its headers arrived when the app can (`answer_now`:
        a warm GET /v1/offers), without an ASGI task, its messages or uvicorn's checks of each
        header; else start the app's task, as uvicorn does. Only on a connection kept alive
        whose writes are not paused, for the app itself (not uvicorn's 503 past the
        concurrency limit), without an access log."""
        now = self._now
        if (
            now is not None
            and app is self.app
            and cycle.keep_alive
            and not self.flow.write_paused
            and not cycle.access_log
        ):
            try:
                scope = cast(Scope, cycle.scope)
                answer = now(scope, self._client(scope))
            except Exception:
                log.exception("answering without a task failed; the app answers instead")
                answer = None
            if answer is not None:
                headers, body = answer
                content = [STATUS_LINE[200]]
                for name, value in (*cycle.default_headers, *headers):
                    content += (name, b": ", value, b"\r\n")
                content += (b"\r\n", body)
                cycle.response_started = cycle.response_complete = True
                cast(_OneWrite, self.transport).write_now(b"".join(content))
                cycle.on_response()
                return
        super()._start_asgi_task(cycle, app)

    def _client(self, scope: Scope) -> str:
        """The client's address as the app will see it: the peer's, or the one uvicorn's
        proxy-headers middleware takes from X-Forwarded-For when the peer is a trusted proxy."""
        peer = scope.get("client")
        host = peer[0] if peer else ""
        proxy = self._proxy
        if proxy is not None and host in proxy.trusted_hosts:
            forwarded = [v for n, v in scope["headers"] if n == b"x-forwarded-for"]
            if forwarded:
                joined = b", ".join(forwarded).decode("latin1")
                found = proxy.trusted_hosts.get_trusted_client_address(joined)[0]
                host = found or host
        return host

    def _on_tick(self) -> None:
        if self._awaiting_headers and self._headers_done == self._headers_done_at_tick:
            self._ticks_awaiting += 1
        else:
            self._ticks_awaiting = 1 if self._awaiting_headers else 0
            self._headers_done_at_tick = self._headers_done
        if self._ticks_awaiting > 2:
            self._tick = None
            if not self.transport.is_closing():
                self.transport.close()
            return
        self._tick = self.loop.call_later(header_timeout_s() / 2, self._on_tick)
