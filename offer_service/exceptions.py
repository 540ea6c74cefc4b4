"""The one error tree; every error a client can see has a stable code and a human message.

OfferServiceError
├── ApiError                 answered to the client as {"error": {...}} with its status
│   ├── ValidationFailed     422, details list every bad field
│   ├── Unauthorized         401
│   ├── Forbidden            403
│   ├── NotFound             404
│   └── PayloadTooLarge      413
├── BadSetting               a setting (an environment variable, an option) has a wrong value
└── StoreError               a storage backend failed (wrapped, never shown raw)
    ├── StoreUnavailable     the backend cannot be reached now (503 store_unavailable)
    └── StoreMissing         opened to use an existing store, the URL names none
"""

from __future__ import annotations

from typing import Any


class OfferServiceError(Exception):
    """Base of every error raised by this package."""


class BadSetting(OfferServiceError, ValueError):
    """A setting's value is not one it can take: the process does not start."""


class ApiError(OfferServiceError):
    """An error with an HTTP status, a stable snake_case code and one human sentence."""

    status_code: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ValidationFailed(ApiError):
    status_code = 422
    code = "validation_error"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class StoreError(OfferServiceError):
    """A storage backend failed; raised `from` the backend's own exception."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached (down, restarting, too slow): a retry later may succeed.
    Reads fall back to cached data, events to the spool; money paths fail closed with 503."""


class StoreMissing(StoreError):
    """Opened only to use what is there (`open_store(url, create=False)`), the URL names no
    existing store: nothing was created."""


STORE_UNAVAILABLE = "The store is unreachable right now; retry shortly."


def store_unavailable() -> ApiError:
    """What a client sees when a StoreUnavailable could not be answered around (503)."""
    return ApiError(
        STORE_UNAVAILABLE, code="store_unavailable", status_code=503, headers={"Retry-After": "1"}
    )


def field_error(field: str, message: str) -> dict[str, Any]:
    """One entry of a 422's `details`."""
    return {"field": field, "message": message}
