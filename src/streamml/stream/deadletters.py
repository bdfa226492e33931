"""Dead letters (``mlops_stream:dlq``): what a letter holds, and listing, showing, replaying, purging.

A dead letter keeps the original entry's fields and adds the ``dlq_*`` fields below, with the reason
code (:class:`~streamml.errors.FailureReason`). Replaying strips those and appends the original fields
to the request stream again, then deletes the letter, in one MULTI, so a letter is never both replayed
and kept, nor lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from streamml import keys
from streamml.errors import FailureReason
from streamml.stream.broker import as_text
from streamml.stream.entry import now_ms

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


def _decode(raw: Any) -> list[DeadLetter]:
    return [
        DeadLetter(
            as_text(letter_id),
            {
                as_text(k): (v.decode(errors="replace") if isinstance(v, bytes) else v)
                for k, v in fields.items()
            },
        )
        for letter_id, fields in raw
    ]


class DeadLetters:
    def __init__(self, redis: Redis, stream: str) -> None:
        self.redis = redis
        self.stream = stream
        self.dlq = keys.dead_letter_stream(stream)

    async def entries(self, *, reason: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        """The oldest ``limit`` letters (with ``reason``: the oldest ``limit`` with that reason,
        however many others come before them)."""
        found: list[DeadLetter] = []
        start = "-"
        while len(found) < limit:
            page = _decode(await self.redis.xrange(self.dlq, min=start, count=SCAN_PAGE))
            found += [letter for letter in page if reason is None or letter.reason == reason]
            if len(page) < SCAN_PAGE:
                break
            start = f"({page[-1].letter_id}"
        return found[:limit]

    async def show(self, letter_id: str) -> DeadLetter | None:
        letters = _decode(await self.redis.xrange(self.dlq, min=letter_id, max=letter_id))
        return letters[0] if letters else None

    async def select(self, ids: Sequence[str], reason: str | None) -> list[DeadLetter]:
        """The letters with these ids (all letters when none are given), of ``reason`` if given."""
        if not ids:
            return await self.entries(reason=reason, limit=1 << 62)
        found = [letter for letter in [await self.show(i) for i in ids] if letter is not None]
        return [letter for letter in found if reason is None or letter.reason == reason]

    async def replay(self, ids: Sequence[str] = (), *, reason: str | None = None) -> int:
        """Send letters back to the request stream (after fixing what made them fail)."""
        letters = await self.select(ids, reason)
        for letter in letters:
            async with self.redis.pipeline(transaction=True) as pipe:
                original: Any = letter.original
                pipe.xadd(self.stream, original)
                pipe.xdel(self.dlq, letter.letter_id)
                await pipe.execute()
        return len(letters)

    async def purge(self, ids: Sequence[str] = (), *, reason: str | None = None) -> int:
        letters = await self.select(ids, reason)
        if not letters:
            return 0
        removed: Any = await self.redis.xdel(self.dlq, *[letter.letter_id for letter in letters])
        return int(removed)
