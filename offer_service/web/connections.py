"""HTTP connections: uvicorn's httptools protocol with a deadline for each request's headers,
writing each response's head and body in one piece."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from offer_service.settings import Settings

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

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


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
