"""Every Redis key, stream, group and channel name streamml uses, with its default.

All per-pipeline keys are derived from the request stream's name, so two pipelines (or two tests)
that use different streams never touch each other's keys.
"""

from __future__ import annotations

from functools import lru_cache
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


def answer_key(stream: str, request_id: str) -> str:
    """What a request was answered, kept for its feedback: route, version, predictions, and the
    challenger's when it shadowed the request (``streamml.rollout.ground_truth``)."""
    return f"{stream}:answer:{request_id}"


def feedback_key(stream: str, request_id: str) -> str:
    """Hash of record index -> the true label given for it (the same feedback twice counts once)."""
    return f"{stream}:feedback:{request_id}"


def accuracy_index_key(stream: str) -> str:
    """Set of the accuracy aggregates that exist: JSON ``[route, version]`` and ``[route, champion,
    challenger]``."""
    return f"{stream}:accuracy"


def accuracy_key(stream: str, route: str, version: str, bucket: int | None = None) -> str:
    """Hash of one version's running totals against feedback; with ``bucket``, those of one slice of the
    window (expiring with it)."""
    suffix = "" if bucket is None else f":{bucket}"
    return f"{stream}:accuracy:{route}:{version}{suffix}"


def accuracy_pair_key(stream: str, route: str, champion: str, challenger: str) -> str:
    """Hash of a shadow pair's paired outcomes on the same labelled records (McNemar's table)."""
    return f"{stream}:accuracy-pair:{route}:{champion}:{challenger}"


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


def model_states_key(stream: str) -> str:
    """Hash of consumer -> the model version each route resolves to in that worker, and whether it
    loaded (read by ``/ready``, ``streamml status`` and the dashboard)."""
    return f"{stream}:models"


def drift_key(stream: str, route: str) -> str:
    """Hash of consumer -> that worker's recent-records window of a route (``streamml drift``)."""
    return f"{stream}:drift:{route}"


# -- partitions --------------------------------------------------------------------------------------

HASH_SLOTS = 16384
"""Redis Cluster's key space: a key's slot is CRC16 of its hash tag, modulo this."""


def partitions_key(stream: str) -> str:
    """The partition count recorded at first use (a process configured with another refuses to start)."""
    return f"{stream}:partitions"


@lru_cache(maxsize=4096)
def partition_tag(partition: int, count: int) -> str:
    """The hash tag of a partition: the first of ``"p"``, ``"p.1"``, ``"p.2"``… whose slot lies in the
    middle half of the partition's share of the 16,384 slots.

    Plain ``{0}``…``{15}`` land where CRC16 puts them: on a 3-master cluster 6, 6 and 4 partitions.
    Tags chosen by slot are spread evenly instead, so masters that own equal contiguous ranges (what
    ``--cluster create`` and ``CLUSTER ADDSLOTSRANGE`` in equal parts give) get equal shares whenever
    ``count`` is a multiple of the number of masters; the middle half keeps a tag off a range's edge."""
    from redis.crc import key_slot

    width = HASH_SLOTS / count
    low, high = (partition + 0.25) * width, (partition + 0.75) * width
    candidate, suffix = str(partition), 0
    while not low <= key_slot(candidate.encode()) < high:
        suffix += 1
        candidate = f"{partition}.{suffix}"
    return candidate


def partition_name(name: str, partition: int, count: int) -> str:
    """A partitioned stream's (or results stream's) key: ``name`` itself with one partition (the
    single-stream layout, unchanged), else ``name:{tag}``; every key derived from it shares the tag,
    so a partition's entry, dead letters, results and counters live in one slot (one MULTI)."""
    if count == 1:
        return name
    return f"{name}:{{{partition_tag(partition, count)}}}"
