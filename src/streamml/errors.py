"""Domain exceptions. The core raises these; only the gateway maps them to HTTP status codes."""

from __future__ import annotations

from dataclasses import dataclass


class StreammlError(Exception):
    """Base of every error streamml raises on purpose. ``code`` is stable and machine-readable."""

    code = "streamml_error"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where (record index, field) and what."""

    message: str
    record: int | None = None
    field: str | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"message": self.message}
        if self.record is not None:
            out["record"] = self.record
        if self.field is not None:
            out["field"] = self.field
        return out


class InvalidRequest(StreammlError):
    """The request does not fit the model's input schema; nothing was published."""

    code = "invalid_request"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = problems[0].message if problems else "invalid request"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first + more)


class UnknownRoute(StreammlError):
    """No model is configured under this route name."""

    code = "unknown_model"

    def __init__(self, route: str, known: list[str]) -> None:
        self.route = route
        self.known = known
        super().__init__(f"unknown model {route!r}; known models: {', '.join(sorted(known))}")


class ModelUnavailable(StreammlError):
    """The registry cannot resolve or load the model right now (registry down, alias missing...)."""

    code = "model_unavailable"


class ModelLoadError(ModelUnavailable):
    """The model artifact exists but cannot be loaded safely (wrong format, untrusted types)."""

    code = "model_load_failed"


class BrokerUnavailable(StreammlError):
    """Redis cannot be reached; the request was not published."""

    code = "broker_unavailable"


class Overloaded(StreammlError):
    """The backlog is over its limit; the request was not published. Retry after a pause."""

    code = "overloaded"


class IdempotencyConflict(StreammlError):
    """A request with the same ``Idempotency-Key`` is still being processed."""

    code = "idempotency_conflict"


class Unauthenticated(StreammlError):
    """No API key, or one that is not valid."""

    code = "unauthenticated"


class Forbidden(StreammlError):
    """A valid API key that may not do this (another route, or read-only)."""

    code = "forbidden"


class RateLimited(StreammlError):
    """The client sent more requests per second than it may."""

    code = "rate_limited"


class PayloadTooLarge(StreammlError):
    """The body, or the number of records in it, is over the limit."""

    code = "payload_too_large"


class UnsupportedMediaType(StreammlError):
    """The body is not sent as application/json."""

    code = "unsupported_media_type"


class NotFound(StreammlError):
    """No such request (never accepted, or its result expired)."""

    code = "not_found"


class PredictionTimeout(StreammlError):
    """The prediction was not written within the synchronous wait."""

    code = "timeout"
