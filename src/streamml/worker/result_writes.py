"""A batch's result documents and results-stream entries written by one command.

Written as a SET and an XADD per request, a batch of 4,096 one-record requests is 8,192 commands in the
acknowledging MULTI, and redis-py reads a ``QUEUED`` reply for each: the client side of those commands
was most of a worker's CPU per one-record entry (``python -m streamml.bench.profile_drain``). Here the
whole batch is one EVAL whose arguments are the documents and fields: one command to pack, one reply to
read. It is queued in the same MULTI as the XACK, so the all-or-nothing settle is unchanged, and a
script's writes replicate and persist as the commands they run. On a cluster every key it names shares
the partition's hash tag, as the MULTI's keys already must.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio.client import Pipeline

WRITE_RESULTS = """
local ttl, maxlen, at = ARGV[1], ARGV[2], 3
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[at], 'EX', ttl)
  local count = tonumber(ARGV[at + 1])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, at + 2, at + 1 + count))
  at = at + 2 + count
end
return #KEYS - 1
"""
"""KEYS: the results stream, then each request's result key. ARGV: the TTL in seconds, the stream's
approximate cap, then per request its document, the number of its field and value strings, and those."""


class ResultWrites:
    """The result documents and results-stream entries of one batch, gathered, then staged as one EVAL."""

    def __init__(self, results_stream: str, ttl_s: int, maxlen: int) -> None:
        self._keys = [results_stream]
        self._args: list[str | bytes | int] = [ttl_s, maxlen]

    def add(self, result_key: str, document: bytes, fields: Sequence[str | bytes]) -> None:
        """One request: its document under ``result_key``, and an entry of ``fields`` (name, value, ...)."""
        self._keys.append(result_key)
        self._args.append(document)
        self._args.append(len(fields))
        self._args.extend(fields)

    def stage(self, tx: Pipeline) -> None:
        if len(self._keys) > 1:
            tx.eval(WRITE_RESULTS, len(self._keys), *self._keys, *self._args)
