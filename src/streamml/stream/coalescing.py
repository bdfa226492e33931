"""Publishes of concurrent requests coalesced into one transaction per event-loop turn.

Each request published alone is a MULTI of its own: a round trip, a connection taken from the pool and
given back, five replies read. Under load the gateway's event loop wakes with several requests ready at
once; :class:`CoalescedPublisher` collects the publishes asked for while the loop runs those, and at the
end of that turn writes them all in one MULTI per partition (:meth:`Publisher.publish_each`). Each request
is answered once that MULTI has been executed — and replicated or fsynced where the durability setting
asks — exactly as when it was published alone; if it fails, every request in it gets the error (nothing of
it was written). A lone request waits for nothing but the end of the turn it arrived in.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from streamml.output_kinds import PREDICT
from streamml.rows import RowsLike
from streamml.stream.publisher import Publication, Publisher


@dataclass(frozen=True)
class _Waiting:
    publication: Publication
    answer: asyncio.Future[str]


class CoalescedPublisher:
    """:meth:`Publisher.publish` for concurrent callers, written together."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self._waiting: list[_Waiting] = []
        self._writing: set[asyncio.Task[None]] = set()
        """Transactions in flight (held so they are not collected before they finish)."""

    async def publish(
        self,
        request_id: str,
        route: str,
        records: RowsLike,
        *,
        reply: bool = False,
        owner: str = "",
        output: str = PREDICT,
    ) -> str:
        """The request's stream id, once its entry is written with those of the same turn."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._write_turn)  # after the callbacks this turn already has
        self._waiting.append(_Waiting(Publication(request_id, route, records, reply, owner, output), answer))
        return await answer

    def _write_turn(self) -> None:
        waiting, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._write(waiting))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, waiting: list[_Waiting]) -> None:
        try:
            stream_ids = await self.publisher.publish_each([w.publication for w in waiting])
        except asyncio.CancelledError:  # the gateway is stopping: so are its callers
            for w in waiting:
                w.answer.cancel()
            raise
        except Exception as exc:  # every caller gets the error its publish alone would have raised
            for w in waiting:
                if not w.answer.done():
                    w.answer.set_exception(exc)
            return
        for w, stream_id in zip(waiting, stream_ids, strict=True):
            if not w.answer.done():  # a caller that went away (a closed connection) is not answered
                w.answer.set_result(stream_id)
