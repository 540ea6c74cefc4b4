"""What every request is answered within: an id, security headers, metrics, error answers."""

from __future__ import annotations

import bisect
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offer_service.domain.surfaces import Surface
from offer_service.exceptions import ApiError, StoreUnavailable
from offer_service.web.exposition import Samples, render

log = logging.getLogger("offer_service")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
INTERNAL_ERROR = orjson.dumps(
    {
        "error": {
            "code": "internal_error",
            "message": "The service failed to answer this request; it has been logged.",
            "details": [],
        }
    }
)
SURFACE_NAMES = frozenset(s.value for s in Surface)
# A 200 answered without a coroutine: its headers and body (what the protocol writes), and a
# route's, which adds the surface of its metrics.
Answered = tuple[list[tuple[bytes, bytes]], bytes]
RouteAnswer = tuple[list[tuple[bytes, bytes]], bytes, str]
# A route's answer without a coroutine (scope, client address, request id); None when the
# request must take the ASGI way.
AnswerNow = Callable[[Scope, str, str], RouteAnswer | None]
# Latency buckets in seconds, for the Prometheus histogram.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Request counts and latencies kept in process, by route (and surface on /v1/offers)."""

    def __init__(self) -> None:
        # One list per (route, surface, method, status): the latency buckets' counts, then
        # the seconds' sum. One lookup a request; the render adds them up by label.
        self.series: dict[tuple[str, str, str, int], list[float]] = {}
        # Requests answered in the turn they arrived, without an ASGI task (`answered_now`).
        self.answered_in_turn = 0

    def observe(
        self, route: str, method: str, status: int, seconds: float, surface: str = ""
    ) -> None:
        key = (route, surface, method, status)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = [0] * (len(BUCKETS) + 1) + [0.0]
        # The first bucket whose bound is not below `seconds`; past the last, +Inf's.
        series[bisect.bisect_left(BUCKETS, seconds)] += 1
        series[-1] += seconds

    @property
    def latency(self) -> dict[str, list[float]]:
        """Bucket counts by route."""
        return {route: series[:-1] for (route, _), series in self._summed(by_surface=False)}

    def _summed(self, *, by_surface: bool) -> list[tuple[tuple[str, str], list[float]]]:
        """Bucket counts then the sum, by route, or by surface of /v1/offers."""
        out: dict[tuple[str, str], list[float]] = {}
        for (route, surface, _, _), series in self.series.items():
            if by_surface and not surface:
                continue
            key = (route, surface if by_surface else "")
            total = out.setdefault(key, [0] * len(series))
            for i, n in enumerate(series):
                total[i] += n
        return sorted(out.items())

    def add_to(self, samples: Samples) -> None:
        samples.add("offer_http_answered_in_turn_total", self.answered_in_turn)
        for (route, surface, method, status), series in sorted(self.series.items()):
            n = sum(series[:-1])
            name = "offer_http_requests_total"
            samples.add(name, n, route=route, method=method, status=status)
            if surface:
                name = "offer_offers_requests_total"
                samples.add(name, n, surface=surface, method=method, status=status)
        for by_surface, name in (
            (False, "offer_http_request_duration_seconds"),
            (True, "offer_offers_request_duration_seconds"),
        ):
            for (route, surface), series in self._summed(by_surface=by_surface):
                where = {"surface": surface} if by_surface else {"route": route}
                cumulative = 0.0
                for bound, n in zip((*BUCKETS, float("inf")), series[:-1], strict=True):
                    cumulative += n
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    samples.add(name, cumulative, "_bucket", **where, le=le)
                samples.add(name, cumulative, "_count", **where)
                samples.add(name, series[-1], "_sum", **where)

    def render(self) -> str:
        samples = Samples()
        self.add_to(samples)
        return render(samples)


def query_surface(scope: Scope) -> str:
    """The surface label of a /v1/offers request not answered with offers (an error): the one
    its query names when known, else "other" (bounded: never the client's own text)."""
    named = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("surface", [""])
    return named[0] if named[0] in SURFACE_NAMES else "other"


# On every response. Pages that need more (the demo storefront, the dashboard) set their own
# Content-Security-Policy; everything else is data and may load nothing at all.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
    (b"x-frame-options", b"DENY"),
    (b"strict-transport-security", b"max-age=31536000"),
)
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


_ALL_SECURITY = [*SECURITY_HEADERS, API_CSP]
_SECURITY_NAMES = frozenset(name for name, _ in _ALL_SECURITY)


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    for name, _ in headers:
        if name.lower() in _SECURITY_NAMES:
            break
    else:
        return headers + _ALL_SECURITY  # what nearly every response takes
    present = {name.lower() for name, _ in headers}
    out = headers + [h for h in SECURITY_HEADERS if h[0] not in present]
    if b"content-security-policy" not in present:
        out.append(API_CSP)
    return out


# Secrets that must never reach a log line, whatever logged them: secret keys, webhook
# secrets, offer tokens (payload.signature) and order tokens (64 hex digits).
_SECRETS = re.compile(
    r"(sk_[A-Za-z0-9_-]{8,}|whsec_[A-Za-z0-9_-]{8,}"
    r"|[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}|\b[0-9a-f]{64}\b)"
)


def redact(text: str) -> str:
    return _SECRETS.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id when there is one; secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in ("request_id", "path", "status", "duration_ms"):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr for this service and uvicorn's own loggers."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("offer_service", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(level.upper())


class Telemetry:
    """What every HTTP request is answered within, on the fast route and the routed path alike:
    an id (echoing a sane X-Request-Id) in the scope's state and on the response, the security
    headers, a count and latency in `metrics` by the route the scope names; an error a client is
    told of (ApiError, StoreUnavailable) answered by `answer`, and a JSON 500 without a trace
    for any other exception."""

    def __init__(
        self, metrics: Metrics, answer: Callable[[ApiError | StoreUnavailable], ASGIApp]
    ) -> None:
        self.metrics = metrics
        self._answer = answer
        # Unique without a random draw per request: a random prefix per process, then a count.
        self._prefix = "req_" + secrets.token_hex(6) + "_"
        self._ids = itertools.count(1)

    def _request_id(self, headers: list[tuple[bytes, bytes]]) -> str:
        for name, value in headers:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    return candidate
                break
        return self._prefix + str(next(self._ids))

    def answered_now(
        self, scope: Scope, client: str, route: str, now: AnswerNow
    ) -> Answered | None:
        """A 200 answered without a coroutine by `now`, the route's (`frame`'s work for it: the
        id, the security headers, the count and latency); None when `now` has no answer, and
        then nothing was counted."""
        t0 = time.perf_counter()
        request_id = self._request_id(scope["headers"])
        answer = now(scope, client, request_id)
        if answer is None:
            return None
        headers, body, surface = answer
        headers.append((b"x-request-id", request_id.encode("latin-1")))
        seconds = time.perf_counter() - t0
        self.metrics.observe(route, scope["method"], 200, seconds, surface)
        self.metrics.answered_in_turn += 1
        return with_security_headers(headers), body

    async def frame(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """An HTTP request, answered by `app` within this telemetry."""
        request_id = self._request_id(scope["headers"])
        header = (b"x-request-id", request_id.encode("latin-1"))
        scope.setdefault("state", {})["request_id"] = request_id
        path = scope.get("path", "")
        started = False
        status = 500
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = with_security_headers([*message.get("headers", []), header])
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        except (ApiError, StoreUnavailable) as exc:
            if started:
                log.exception("error after the answer began", extra={"request_id": request_id})
            else:
                await self._answer(exc)(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id, "path": path})
            if not started:
                status = 500
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": with_security_headers(
                            [(b"content-type", b"application/json"), header]
                        ),
                    }
                )
                await send({"type": "http.response.body", "body": INTERNAL_ERROR})
        finally:
            route = scope.get("route")
            name = getattr(route, "path", "unmatched")
            surface = ""
            if name == "/v1/offers":  # answered: the endpoint named it
                surface = scope["state"].get("surface") or query_surface(scope)
            seconds = time.perf_counter() - t0
            self.metrics.observe(name, scope["method"], status, seconds, surface)
