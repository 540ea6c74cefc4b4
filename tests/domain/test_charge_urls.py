"""The charge_url check: every spelling of a loopback, private or credential-bearing address."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from pydantic import ValidationError

from offer_service.domain.charge_urls import (
    MAX_CHARGE_URL_LENGTH,
    BadChargeUrl,
    check_charge_url,
    host_address,
    non_public,
)
from offer_service.domain.policy import StoreRules, rules_context

# Each one reaches this machine, a private network or a cloud's metadata service, or is not a
# URL the service calls: refused unless the operator allows private charge URLs.
NOT_PUBLIC = [
    "http://shop.example/charge",
    "https://127.0.0.1/charge",
    "https://127.1/charge",
    "https://0x7f000001/charge",
    "https://2130706433/charge",
    "https://0x7f.1/charge",
    "https://127.0.0.1./charge",
    "https://[::1]/charge",
    "https://[0:0:0:0:0:0:0:1]/charge",
    "https://[::ffff:127.0.0.1]/charge",
    "https://[::ffff:7f00:1]/charge",
    "https://[::127.0.0.1]/charge",
    "https://[64:ff9b::a00:1]/charge",
    "https://[2002:7f00:1::]/charge",
    "https://localhost/charge",
    "https://LOCALHOST./charge",
    "https://api.localhost/charge",
    "https://10.0.0.7/charge",
    "https://172.16.3.4/charge",
    "https://192.168.1.10:6379/",
    "https://100.64.0.1/charge",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fe80::1]/charge",
    "https://[fc00::1]/charge",
    "https://0.0.0.0/charge",
    "https://0/charge",
    "https://224.0.0.1/charge",
    "https://240.0.0.1/charge",
    "https://255.255.255.255/charge",
]

# Refused whatever the operator allows: the service never sends a charge there.
NEVER = [
    "https://user:secret@shop.example/charge",
    "https://shop.example@127.0.0.1/charge",
    "https://:secret@shop.example/charge",
    "https://shop.example/" + "a" * 60_000,
    "ftp://shop.example/charge",
    "file:///etc/passwd",
    "shop.example/charge",
    "https:///charge",
    "https://%31%32%37.0.0.1/charge",
    "https://0177.0.0.1/charge",
    "https://08.0.0.1/charge",
    "https://1.2.3.4.5/charge",
    "https://shop.example:0/charge",
    "https://shop.example:65536/charge",
    "https://[::1/charge",
]

PUBLIC = [
    "https://shop.example/charge",
    "https://shop.example:8443/api/charge?v=1",
    "https://SHOP.example./charge",
    "https://bücher.example/charge",
    "https://93.184.215.14/charge",
    "https://[2606:4700::1111]/charge",
]


@pytest.mark.parametrize("url", NOT_PUBLIC + NEVER)
def test_a_charge_url_that_is_not_public_is_refused(url: str) -> None:
    with pytest.raises(BadChargeUrl):
        check_charge_url(url, allow_private=False)


@pytest.mark.parametrize("url", NEVER)
def test_credentials_odd_schemes_and_long_urls_are_refused_even_when_private_ones_are_allowed(
    url: str,
) -> None:
    with pytest.raises(BadChargeUrl):
        check_charge_url(url, allow_private=True)


@pytest.mark.parametrize("url", NOT_PUBLIC)
def test_the_operator_can_allow_private_charge_urls(url: str) -> None:
    assert check_charge_url(url, allow_private=True).host


@pytest.mark.parametrize("url", PUBLIC)
def test_https_to_a_public_host_is_accepted_on_any_port(url: str) -> None:
    check_charge_url(url, allow_private=False)


def test_the_host_and_port_are_the_ones_the_http_client_connects_to() -> None:
    target = check_charge_url("https://Bücher.example:8443/x", allow_private=False)
    assert (target.scheme, target.host, target.port) == ("https", "xn--bcher-kva.example", 8443)
    assert check_charge_url("https://shop.example/x", allow_private=False).port == 443
    assert check_charge_url("http://127.0.0.1/x", allow_private=True).port == 80


@pytest.mark.parametrize(
    "host", ["127.1", "0x7f000001", "2130706433", "0x7f.0.0.1", "127.0.0.1.", "0177.0.0.1"]
)
def test_numeric_hosts_are_read_as_the_resolver_reads_them(host: str) -> None:
    assert host_address(host) == ip_address("127.0.0.1")


def test_a_host_name_is_not_an_address() -> None:
    assert host_address("shop.example") is None
    assert host_address("cafe.face") is None
    assert host_address("0x.example") is None


def test_the_length_cap_counts_the_whole_url() -> None:
    base = "https://shop.example/"
    check_charge_url(base + "a" * (MAX_CHARGE_URL_LENGTH - len(base)), allow_private=False)
    with pytest.raises(BadChargeUrl, match="2048"):
        check_charge_url(base + "a" * (MAX_CHARGE_URL_LENGTH - len(base) + 1), allow_private=False)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::ffff:10.1.2.3", "a private address"),
        ("64:ff9b::a9fe:a9fe", "a link-local address"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "a loopback address"),
        ("0.0.0.0", "the unspecified address"),
        ("ff02::1", "a multicast address"),
        ("198.51.100.7", "a private address"),
        ("8.8.8.8", None),
        ("2a00:1450:4001::200e", None),
    ],
)
def test_what_kind_of_address(address: str, kind: str | None) -> None:
    assert non_public(ip_address(address)) == kind


def test_store_rules_check_the_charge_url_as_their_context_says() -> None:
    private = {"charge_url": "http://127.0.0.1:9000/charge"}
    with pytest.raises(ValidationError, match="https://"):
        StoreRules.model_validate(private)
    with pytest.raises(ValidationError, match="https://"):
        StoreRules.model_validate(private, context=rules_context("public"))
    allowed = StoreRules.model_validate(private, context=rules_context("private"))
    assert allowed.charge_url == private["charge_url"]
    # Rules read back from storage are taken as stored; the charge client checks at call time.
    stored = {"charge_url": "https://user:pw@127.0.0.1/" + "a" * 60_000}
    assert StoreRules.model_validate(stored, context=rules_context("stored")).charge_url
    assert StoreRules.model_validate({"charge_url": None}).charge_url is None
