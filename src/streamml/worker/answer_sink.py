"""What each request was answered, kept for its feedback (:mod:`streamml.rollout.ground_truth`)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio.client import Pipeline

from streamml.rollout.ground_truth import stage_answers
from streamml.worker.sinks import FailedRequest, Result, WrittenBatch


class AnswerSink:
    """A batch's answers as one command in the transaction that acknowledges it, kept ``ttl_s``."""

    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s

    def write(self, results: Sequence[Result], failed: Sequence[FailedRequest] = ()) -> None:
        pass  # everything goes in the acknowledging transaction

    def stage(self, tx: Pipeline, batch: WrittenBatch) -> None:
        stage_answers(tx, batch.partition, batch.results, self.ttl_s)

    def close(self) -> None:
        pass
