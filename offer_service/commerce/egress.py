"""Connections to the stores' charge endpoints: only to public addresses, checked as connected."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from ipaddress import ip_address
from typing import Any

import httpcore
import httpx

from offer_service.domain.charge_urls import BadChargeUrl, IPAddress, check_charge_url, non_public

# A set-time lookup slower than this lets the rules through: the call-time check is the one that
# counts, and a merchant's PUT should not wait on a slow resolver.
SET_TIME_LOOKUP_S = 2.0


async def lookup(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, as the system resolver answers (tests replace this
    function: DNS is the outside system here)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ip_address(info[4][0]) for info in infos))


def refusal(host: str, addresses: Iterable[IPAddress]) -> str | None:
    """Why a host with these addresses is not called; None when every one is public."""
    for address in addresses:
        if kind := non_public(address):
            return f"{host} resolves to {address}, {kind}"
    return None


async def check_resolved(url: str, *, allow_private: bool) -> None:
    """Raise BadChargeUrl when `url` fails the charge_url check or its host name resolves to an
    address that is not public. A name that does not resolve now passes: the call-time check
    refuses it if it ever resolves to such an address."""
    target = check_charge_url(url, allow_private=allow_private)
    if allow_private or target.address is not None:
        return
    try:
        async with asyncio.timeout(SET_TIME_LOOKUP_S):
            addresses = await lookup(target.host, target.port)
    except (OSError, TimeoutError):
        return
    if reason := refusal(target.host, addresses):
        raise BadChargeUrl(f"charge_url must name a public host: {reason}")


class RefusedAddress(httpcore.ConnectError):
    """The host resolves to an address the service does not call."""


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses it resolved and checked.

    A charge_url is checked when it is set, but its host name can be re-pointed afterwards (DNS
    rebinding), and a URL stored before the check existed was never checked. So every new
    connection resolves the host here, is refused when any address is not public, and is made to
    an address checked here: no second lookup happens between the check and the connect. Only
    the TCP connect is redirected: TLS is then negotiated and verified by httpcore against the
    URL's own host name, and connections stay pooled by host name, so one verified for a store's
    host is never used for another's. (Sending to the IP with a Host header and SNI would verify
    each handshake too, but httpcore would pool connections by IP: two stores behind one address
    would share a connection verified for only one of them.)
    """

    def __init__(
        self, *, allow_private: bool, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._allow_private = allow_private
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await lookup(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not self._allow_private and (reason := refusal(host, addresses)):
            raise RefusedAddress(reason)
        failure: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress("the charge client connects to TCP addresses only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PublicOnlyTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a PublicOnlyBackend. httpx takes no network backend, so the pool it
    builds is replaced by the same pool (httpx's default limits and TLS context) on ours."""

    def __init__(self, *, allow_private: bool) -> None:
        ssl_context = httpx.create_ssl_context()
        super().__init__(verify=ssl_context)
        limits = httpx.Limits()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PublicOnlyBackend(allow_private=allow_private),
        )
