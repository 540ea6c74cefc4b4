"""A store's charge endpoint address: read as the HTTP client reads it, refused unless public."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address
from urllib.parse import unquote

import httpx

IPAddress = IPv4Address | IPv6Address

MAX_CHARGE_URL_LENGTH = 2048

# A host name as it reaches the resolver (httpx lowercases it and IDNA-encodes it first).
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
# A last label the resolver reads as a number (inet_aton forms: 2130706433, 0x7f000001, 0177).
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
# Prefixes of IPv6 addresses that carry an IPv4 address in their last 32 bits and reach it:
# NAT64 (RFC 6052) and the deprecated IPv4-compatible form.
_V4_IN_LAST_32 = (IPv6Network("64:ff9b::/96"), IPv6Network("::/96"))


class BadChargeUrl(ValueError):
    """A charge_url the service will not call; the message says why, for the merchant."""


@dataclass(frozen=True, slots=True)
class ChargeTarget:
    """What the HTTP client will connect to: `host` exactly as it is handed to the resolver."""

    scheme: str
    host: str
    port: int
    # The address itself when the host is a literal, in any form the resolver accepts.
    address: IPAddress | None


def parse_charge_url(url: str) -> ChargeTarget:
    """The URL's scheme, host and port as httpx reads them; refuses what the service never
    calls, whatever the operator allows: over-long URLs, other schemes, user info."""
    if len(url) > MAX_CHARGE_URL_LENGTH:
        raise BadChargeUrl(f"charge_url must be at most {MAX_CHARGE_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise BadChargeUrl(f"charge_url is not a valid URL: {exc}") from None
    if parsed.scheme not in ("https", "http"):
        raise BadChargeUrl("charge_url must be an https:// URL")
    # httpx would send them as Basic credentials to whatever host the URL names.
    if parsed.userinfo:
        raise BadChargeUrl("charge_url must not carry a user name or password")
    host = parsed.raw_host.decode("ascii")
    port = (443 if parsed.scheme == "https" else 80) if parsed.port is None else parsed.port
    if not 1 <= port <= 65535:
        raise BadChargeUrl("charge_url has an invalid port")
    return ChargeTarget(parsed.scheme, host, port, host_address(host))


def host_address(host: str) -> IPAddress | None:
    """The address a literal host stands for, read as the resolver reads it (127.1,
    0x7f000001, 2130706433 and 127.0.0.1. are all 127.0.0.1); None for a host name."""
    if ":" in host:
        try:
            return ip_address(unquote(host))
        except ValueError:
            raise BadChargeUrl("charge_url has an invalid IPv6 address") from None
    name = host.removesuffix(".")
    if not _NAME.fullmatch(name):
        raise BadChargeUrl("charge_url has an invalid host name")
    if not _NUMERIC_LABEL.fullmatch(name.rpartition(".")[2]):
        return None
    # No top-level domain is numeric: the resolver reads such a host as an address or fails.
    try:
        return IPv4Address(socket.inet_aton(name))
    except OSError:
        raise BadChargeUrl("charge_url has an invalid IPv4 address") from None


def non_public(address: IPAddress) -> str | None:
    """What the address is when it is not a public one ("a loopback address", ...)."""
    # An IPv6 address that carries an IPv4 one reaches that one (except :: and ::1 themselves).
    if isinstance(address, IPv6Address) and not (address.is_loopback or address.is_unspecified):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and any(address in net for net in _V4_IN_LAST_32):
            embedded = IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and (kind := non_public(embedded)):
            return kind
        if address.teredo is not None and (kind := non_public(address.teredo[1])):
            return kind
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


def is_local_name(host: str) -> bool:
    """`localhost` and its subdomains always mean this machine (RFC 6761)."""
    name = host.removesuffix(".")
    return name == "localhost" or name.endswith(".localhost")


def check_charge_url(url: str, *, allow_private: bool) -> ChargeTarget:
    """`url` as a charge endpoint: https to a public host, unless the operator allows private
    ones (http, loopback, private networks). Host names are resolved by the caller."""
    target = parse_charge_url(url)
    if allow_private:
        return target
    if target.scheme != "https":
        raise BadChargeUrl("charge_url must be an https:// URL")
    if target.address is not None and (kind := non_public(target.address)):
        raise BadChargeUrl(f"charge_url must name a public host, not {kind}")
    if is_local_name(target.host):
        raise BadChargeUrl("charge_url must name a public host, not this machine")
    return target
