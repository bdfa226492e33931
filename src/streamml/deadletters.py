"""Operating the dead-letter stream (``mlops_stream:dlq``): list, show, replay, purge.

A dead letter keeps the original entry's fields and adds ``dlq_*`` fields with the reason. Replaying
strips those and appends the original fields to the request stream again, then deletes the letter,
in one MULTI, so a letter is never both replayed and kept, nor lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from streamml import keys

DLQ_PREFIX = b"dlq_"


@dataclass(frozen=True)
class DeadLetter:
    letter_id: str
    fields: dict[str, str]

    @property
    def original(self) -> dict[str, str]:
        return {k: v for k, v in self.fields.items() if not k.startswith("dlq_")}

    def summary(self) -> dict[str, str]:
        return {
            "id": self.letter_id,
            "request_id": self.fields.get("request_id", "?"),
            "route": self.fields.get("route", "?"),
            "reason": self.fields.get("dlq_reason", "?"),
            "deliveries": self.fields.get("dlq_deliveries", "?"),
            "error": self.fields.get("dlq_error", "")[:120],
        }


def _decode(raw: Any) -> list[DeadLetter]:
    letters = []
    for letter_id, fields in raw:
        decoded = {
            (k.decode() if isinstance(k, bytes) else k): (
                v.decode(errors="replace") if isinstance(v, bytes) else v
            )
            for k, v in fields.items()
        }
        letters.append(DeadLetter(letter_id.decode() if isinstance(letter_id, bytes) else letter_id, decoded))
    return letters


class DeadLetters:
    def __init__(self, redis: Redis, stream: str) -> None:
        self.redis = redis
        self.stream = stream
        self.dlq = keys.dead_letter_stream(stream)

    async def entries(self, *, reason: str | None = None, count: int = 1000) -> list[DeadLetter]:
        raw: Any = await self.redis.xrange(self.dlq, count=count)
        letters = _decode(raw)
        return [letter for letter in letters if reason is None or letter.fields.get("dlq_reason") == reason]

    async def show(self, letter_id: str) -> DeadLetter | None:
        raw: Any = await self.redis.xrange(self.dlq, min=letter_id, max=letter_id)
        letters = _decode(raw)
        return letters[0] if letters else None

    async def _select(self, ids: Sequence[str], reason: str | None) -> list[DeadLetter]:
        if ids:
            found = [await self.show(i) for i in ids]
            return [letter for letter in found if letter is not None]
        return await self.entries(reason=reason, count=1_000_000)

    async def replay(self, ids: Sequence[str] = (), *, reason: str | None = None) -> int:
        """Send letters back to the request stream (after fixing what made them fail)."""
        letters = await self._select(ids, reason)
        for letter in letters:
            async with self.redis.pipeline(transaction=True) as pipe:
                original: Any = letter.original
                pipe.xadd(self.stream, original)
                pipe.xdel(self.dlq, letter.letter_id)
                await pipe.execute()
        return len(letters)

    async def purge(self, ids: Sequence[str] = (), *, reason: str | None = None) -> int:
        letters = await self._select(ids, reason)
        if not letters:
            return 0
        removed: Any = await self.redis.xdel(self.dlq, *[letter.letter_id for letter in letters])
        return int(removed)
