"""Domain exceptions. The core raises these; only the gateway maps them to HTTP status codes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class StreammlError(Exception):
    """Base of every error streamml raises on purpose. ``code`` is stable and machine-readable."""

    code = "streamml_error"
    retry_later = False
    """True when the same request may succeed later (HTTP answers carry ``Retry-After``)."""


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
    retry_later = True


class ModelLoadError(ModelUnavailable):
    """The model version exists but this worker cannot serve it, and trying again will not change that:
    an artifact that would run code without the opt-in, untrusted types, a kind without a loader, a
    library missing. Its requests fail at once (``FailureReason.MODEL_NOT_SERVABLE``)."""

    code = "model_not_servable"
    retry_later = False


class BrokerUnavailable(StreammlError):
    """Redis cannot be reached; the request was not published."""

    code = "broker_unavailable"
    retry_later = True


class NotDurable(BrokerUnavailable):
    """The request is in Redis but the fsync or replica the durability setting asks for did not
    confirm it in time. It may still be processed: a retry with the same ``Idempotency-Key`` is safe."""

    code = "not_durable"


class DurabilityUnsupported(StreammlError):
    """The server cannot provide the configured acceptance durability (``fsync`` without an
    append-only file, or with neither WAITAOF nor ``appendfsync always``)."""

    code = "durability_unsupported"


class PartitionCountMismatch(StreammlError):
    """This process is configured with another partition count than the one recorded in Redis."""

    code = "partition_count_mismatch"


class Overloaded(StreammlError):
    """The backlog is over its limit; the request was not published. Retry after a pause."""

    code = "overloaded"
    retry_later = True


class IdempotencyConflict(StreammlError):
    """A request with the same ``Idempotency-Key`` is still being processed."""

    code = "idempotency_conflict"
    retry_later = True


class Unauthenticated(StreammlError):
    """No API key, or one that is not valid."""

    code = "unauthenticated"


class Forbidden(StreammlError):
    """A valid API key that may not do this (another route, or read-only)."""

    code = "forbidden"


class RateLimited(StreammlError):
    """The client sent more requests per second than it may."""

    code = "rate_limited"
    retry_later = True


class PayloadTooLarge(StreammlError):
    """The body, or the number of records in it, is over the limit."""

    code = "payload_too_large"


class UnsupportedMediaType(StreammlError):
    """The body is not sent as application/json."""

    code = "unsupported_media_type"


class NotFound(StreammlError):
    """No such request (never accepted, or its result expired)."""

    code = "not_found"


class UnsupportedOutput(StreammlError):
    """The request asks a model for an output it does not have (probabilities of a regressor, say)."""

    code = "unsupported_output"


class PredictionFailed(StreammlError):
    """The request was accepted, then dead-lettered: a worker could not predict it (``reason`` says why,
    as its dead letter does). A client waiting on it gets this at once, not a timeout."""

    code = "prediction_failed"

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.code = reason or self.code
        self.retry_later = reason == FailureReason.MODEL_LOAD_FAILED.value
        super().__init__(message)


class PredictionTimeout(StreammlError):
    """The prediction was not written within the synchronous wait."""

    code = "timeout"


class FailureReason(StrEnum):
    """Why a request entry was not predicted: the reason code a dead letter carries (``dlq_reason``).
    The one list of them; ``streamml dlq list --reason`` takes these values."""

    INVALID_PAYLOAD = "invalid_payload"
    """The entry is not a well-formed request (written by something other than our gateway)."""
    UNSUPPORTED_FORMAT = "unsupported_format"
    """The entry's format version (field ``v``) is not one this worker knows: upgrade the worker,
    then ``streamml dlq replay --reason unsupported_format``."""
    UNKNOWN_MODEL = "unknown_model"
    """The entry names a route this worker has no model for."""
    MODEL_LOAD_FAILED = "model_load_failed"
    """The route's model could not be resolved or downloaded now (the registry or its store is down)."""
    MODEL_NOT_SERVABLE = "model_not_servable"
    """The route's model version cannot be served by this worker (an artifact that would run code
    without the opt-in, a kind streamml has no loader for, a library missing): no retry mends it."""
    UNSUPPORTED_OUTPUT = "unsupported_output"
    """The request asks for an output its model does not have (probabilities of a regressor)."""
    PREDICTION_FAILED = "prediction_failed"
    """The model raised while predicting the entry's records (isolated from the rest of its batch)."""

    @property
    def permanent(self) -> bool:
        """No retry can mend it: dead-lettered on the first delivery."""
        return self in _PERMANENT


_PERMANENT = frozenset(
    {
        FailureReason.INVALID_PAYLOAD,
        FailureReason.UNSUPPORTED_FORMAT,
        FailureReason.UNKNOWN_MODEL,
        FailureReason.MODEL_NOT_SERVABLE,
        FailureReason.UNSUPPORTED_OUTPUT,
    }
)


class InvalidEntry(StreammlError):
    """A stream entry that cannot be read as a request."""

    code = "invalid_entry"

    def __init__(self, message: str, reason: FailureReason = FailureReason.INVALID_PAYLOAD) -> None:
        self.reason = reason
        super().__init__(message)


class StreamGroupNotFound(StreammlError):
    """The consumer group (or its stream) disappeared while a worker was reading it."""

    code = "group_not_found"


class RedisUnreachable(StreammlError):
    """A worker gave up on Redis after the configured time without a connection."""

    code = "redis_unreachable"


class LifecycleRefused(StreammlError):
    """A promote or rollback that makes no sense (no challenger, nothing to roll back, incompatible
    model); the registry was not changed."""

    code = "refused"
