"""Schemathesis against /openapi.json: every operation, generated inputs, a real server.

No server errors, and every response matches the documented schema and status codes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from offer_service.settings import Settings
from offer_service.web.openapi import document
from tests.conftest import LiveServer, run_server

schema = schemathesis.openapi.from_dict(document())
# What the contract promises: no 5xx, and every answer documented (status, content type, body).
# Cross-field rules (product_id required on product_page, order_token with order_id) are not
# expressible per query parameter, so "schema-valid input must be accepted" is not checked.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
HEADERS = {"Authorization": "Bearer sk_demo", "X-Offer-Key": "pk_demo"}


def fuzzed(store_url: str) -> Settings:
    # Generated charge URLs must not send the server's set-time check to a real DNS lookup of an
    # outside name: with private charge URLs allowed, it looks nothing up.
    return Settings(store_url=store_url, demo=True, allow_private_charge_urls=True)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    path: Path = tmp_path_factory.mktemp("fuzz")
    yield from run_server(fuzzed(f"sqlite:///{path}/offers.db"))


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_within_its_schema(
    case: schemathesis.Case, live: LiveServer
) -> None:
    case.call_and_validate(base_url=live.url, headers=HEADERS, checks=CHECKS)


# The chains replay their steps to explore and shrink, so a step must answer the same way each
# time: operations that change what later steps are answered (a key rotated, then refused once its
# grace period ends; rate limits set by a generated body) are fuzzed above, not chained.
STEADY = schema.exclude(path_regex=r"/rotate$|^/v1/admin/rules$")


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[LiveServer]:
    """A server of its own: the module's has had its keys and rules fuzzed."""
    yield from run_server(fuzzed(f"sqlite:///{tmp_path}/offers.db"))


class Chains(STEADY.as_state_machine()):  # type: ignore[misc]
    """Sequences that follow the document's links: an offer's token into events, declines and
    accepts; a catalog page's ids into neighbours and offers; a feed key into its feeds."""

    url = ""
    followed: ClassVar[Counter[str]] = Counter()

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"base_url": self.url, "headers": HEADERS}

    def before_call(self, case: schemathesis.Case) -> None:
        # The key travels in the header: a generated `key` would only ever be a stranger's.
        for part in (case.query, case.body):
            if isinstance(part, dict):
                part.pop("key", None)
        # Events carry the client's clock: a linked event is sent now.
        if case.path == "/v1/events" and isinstance(case.body, dict):
            for event in case.body.get("events") or ():
                if isinstance(event, dict) and event.get("id") == "impression-1":
                    event["ts"] = int(time.time() * 1000)

    def after_call(self, response: Any, case: schemathesis.Case) -> None:
        self.followed[f"{case.method} {case.path} {response.status_code}"] += 1

    def validate_response(
        self, response: Any, case: schemathesis.Case, additional_checks: Any = None, **kw: Any
    ) -> None:
        case.validate_response(response, checks=CHECKS, headers=HEADERS)


def test_linked_sequences_answer_within_the_schema(fresh: LiveServer) -> None:
    Chains.url = fresh.url
    Chains.followed.clear()
    Chains.run(
        settings=settings(
            max_examples=150,
            stateful_step_count=8,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # The chains followed links: a random product id or feed key would never answer 200.
    used = " | ".join(sorted(k for k, n in Chains.followed.items() if n))
    assert "GET /v1/admin/products/{product_id}/neighbors 200" in used, used
    assert "GET /v1/feeds/{feed_key}/{touchpoint} 200" in used, used
