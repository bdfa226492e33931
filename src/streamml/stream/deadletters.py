"""Dead letters (``mlops_stream:dlq``): what a letter holds, and listing, showing, replaying, purging.

A dead letter keeps the original entry's fields and adds the ``dlq_*`` fields below, with the reason
code (:class:`~streamml.errors.FailureReason`). Replaying strips those and hands the original fields to
the publisher, which appends them to the request stream again and deletes the letter in one MULTI, so a
letter is never both replayed and kept, nor lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from streamml.errors import FailureReason
from streamml.stream.entry import now_ms
from streamml.stream.ids import as_text
from streamml.stream.publisher import Publisher
from streamml.stream.topology import Partition, StreamTopology

FIELD_PREFIX = "dlq_"
REASON = "dlq_reason"
"""A :class:`FailureReason` value."""
ORIGINAL_ID = "dlq_original_id"
"""The entry's id in the request stream."""
ERROR_CLASS = "dlq_error_class"
ERROR = "dlq_error"
"""The error's message, cut at ``ERROR_MAX_CHARS``."""
DELIVERIES = "dlq_deliveries"
"""How many times the entry had been delivered."""
WORKER = "dlq_worker"
"""The consumer that gave up on it."""
FAILED_MS = "dlq_failed_ms"
"""When, in epoch milliseconds."""
ERROR_MAX_CHARS = 2000
SCAN_PAGE = 1000


def letter_fields(
    original: dict[bytes, bytes],
    *,
    stream_id: str,
    reason: FailureReason,
    error: BaseException,
    deliveries: int,
    worker: str,
) -> dict[Any, Any]:
    """The fields of the dead letter of an entry: its own, plus why and where it failed."""
    fields: dict[Any, Any] = dict(original)
    fields.update(
        {
            ORIGINAL_ID: stream_id,
            REASON: reason.value,
            ERROR_CLASS: type(error).__name__,
            ERROR: str(error)[:ERROR_MAX_CHARS],
            DELIVERIES: str(deliveries),
            WORKER: worker,
            FAILED_MS: f"{now_ms():.0f}",
        }
    )
    return fields


@dataclass(frozen=True)
class DeadLetter:
    letter_id: str
    fields: dict[str, str]

    @property
    def reason(self) -> str:
        return self.fields.get(REASON, "?")

    @property
    def original(self) -> dict[str, str]:
        return {k: v for k, v in self.fields.items() if not k.startswith(FIELD_PREFIX)}

    def summary(self) -> dict[str, str]:
        return {
            "id": self.letter_id,
            "request_id": self.fields.get("request_id", "?"),
            "route": self.fields.get("route", "?"),
            "reason": self.reason,
            "deliveries": self.fields.get(DELIVERIES, "?"),
            "error": self.fields.get(ERROR, "")[:120],
        }


class DeadLetters:
    """The dead letters of a pipeline. With partitions each has its own letters; a letter's id then
    names its partition as a request id does (``StreamTopology.tag_id``), and a replay goes back to the
    partition it came from, through the publisher (the one writer of the request streams)."""

    def __init__(self, redis: Redis, topology: StreamTopology, publisher: Publisher) -> None:
        self.redis = redis
        self.topology = topology
        self.publisher = publisher

    async def entries(self, *, reason: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        """The oldest ``limit`` letters (with ``reason``: the oldest ``limit`` with that reason,
        however many others come before them), oldest first over all partitions."""
        found: list[DeadLetter] = []
        for part in self.topology.partitions:
            start, taken = "-", 0
            while taken < limit:
                raw: Any = await self.redis.xrange(part.dead_letters, min=start, count=SCAN_PAGE)
                page = self._decode(raw, part)
                chosen = [letter for letter in page if reason is None or letter.reason == reason]
                found += chosen
                taken += len(chosen)
                if len(page) < SCAN_PAGE:
                    break
                start = f"({as_text(raw[-1][0])}"
        found.sort(key=lambda letter: int(letter.fields.get(FAILED_MS, "0") or 0))
        return found[:limit]

    async def show(self, letter_id: str) -> DeadLetter | None:
        located = self.topology.locate(letter_id)
        if located is None:
            return None
        part, raw_id = located
        letters = self._decode(await self.redis.xrange(part.dead_letters, min=raw_id, max=raw_id), part)
        return letters[0] if letters else None

    async def select(self, ids: Sequence[str], reason: str | None) -> list[DeadLetter]:
        """The letters with these ids (all letters when none are given), of ``reason`` if given."""
        if not ids:
            return await self.entries(reason=reason, limit=1 << 62)
        found = [letter for letter in [await self.show(i) for i in ids] if letter is not None]
        return [letter for letter in found if reason is None or letter.reason == reason]

    async def replay(self, ids: Sequence[str] = (), *, reason: str | None = None) -> int:
        """Send letters back to their request stream (after fixing what made them fail)."""
        letters = await self.select(ids, reason)
        for letter in letters:
            part, raw_id = self._located(letter)
            await self.publisher.replay(part, letter.original, raw_id)
        return len(letters)

    async def purge(self, ids: Sequence[str] = (), *, reason: str | None = None) -> int:
        removed = 0
        for letter in await self.select(ids, reason):
            part, raw_id = self._located(letter)
            count: Any = await self.redis.xdel(part.dead_letters, raw_id)
            removed += int(count)
        return removed

    def _located(self, letter: DeadLetter) -> tuple[Partition, str]:
        located = self.topology.locate(letter.letter_id)
        assert located is not None  # the id was made by _decode
        return located

    def _decode(self, raw: Any, part: Partition) -> list[DeadLetter]:
        return [
            DeadLetter(
                self.topology.tag_id(as_text(letter_id), part),
                {
                    as_text(k): (v.decode(errors="replace") if isinstance(v, bytes) else v)
                    for k, v in fields.items()
                },
            )
            for letter_id, fields in raw
        ]
