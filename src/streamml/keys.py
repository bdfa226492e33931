"""Every Redis key, stream, group and channel name streamml uses, with its default.

All per-pipeline keys are derived from the request stream's name, so two pipelines (or two tests)
that use different streams never touch each other's keys.
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_STREAM = "mlops_stream"
"""Requests accepted by the gateway, one entry per request (which may hold many records)."""

DEFAULT_GROUP = "workers"
"""Consumer group the workers read the request stream with."""

DEFAULT_RESULTS_STREAM = "mlops_predictions"
"""Capped stream of finished predictions, one entry per request, for downstream consumers."""

MESSAGE_FORMAT_VERSION = "1"
"""Version of the request-entry layout (field ``v``); bumped on incompatible changes."""


def dead_letter_stream(stream: str) -> str:
    """Entries that failed too often, with the reason (``mlops_stream:dlq``)."""
    return f"{stream}:dlq"


def result_key(stream: str, request_id: str) -> str:
    """JSON document with a request's status and, once done, its predictions."""
    return f"{stream}:result:{request_id}"


def replies_channel(stream: str) -> str:
    """Pub/sub channel on which workers announce finished requests that a client waits for."""
    return f"{stream}:replies"


def workers_heartbeat_key(stream: str) -> str:
    """Sorted set of consumer name -> last heartbeat (epoch seconds)."""
    return f"{stream}:workers"


def rate_limit_prefix(stream: str) -> str:
    """Per-client request counters, one key per client and second (``<prefix>:<client>:<epoch s>``)."""
    return f"{stream}:rate"


def idempotency_key(stream: str, key: str) -> str:
    """The first response given to a client's ``Idempotency-Key``."""
    return f"{stream}:idem:{key}"


CLASS_SEPARATOR = "\x1f"
"""Between the route and the label in a field of the classes counter (neither may contain it)."""


class CounterKeys(NamedTuple):
    """Hashes of running totals, kept in the same MULTI as the work they count, so they hold for every
    gateway and worker process together (the dashboard and ``streamml status`` read them)."""

    accepted: str
    """route -> records accepted (the gateway's publish)."""
    predicted: str
    """route -> records predicted and written (the worker's settle)."""
    classes: str
    """route + CLASS_SEPARATOR + label -> records predicted with that label."""
    dead_letters: str
    """reason -> entries dead-lettered."""


def counter_keys(stream: str) -> CounterKeys:
    return CounterKeys(
        f"{stream}:counts:accepted",
        f"{stream}:counts:predicted",
        f"{stream}:counts:classes",
        f"{stream}:counts:dead_letters",
    )


def canary_key(stream: str) -> str:
    """Hash of route -> share of its requests the challenger answers (``streamml canary set``)."""
    return f"{stream}:canary"


def shadow_index_key(stream: str) -> str:
    """Set of the (route, model, champion, challenger) pairs with shadow aggregates (JSON arrays)."""
    return f"{stream}:shadow"


def shadow_pair_key(stream: str, route: str, champion: str, challenger: str) -> str:
    """Hash of one pair's shadow aggregates (``streamml.models.shadow``)."""
    return f"{stream}:shadow:{route}:{champion}:{challenger}"


def drift_key(stream: str, route: str) -> str:
    """Hash of consumer -> that worker's recent-records window of a route (``streamml drift``)."""
    return f"{stream}:drift:{route}"
