"""Ground truth fed back, and how often each version was right.

A worker keeps what it answered each request (:func:`stage_answers`, one command per batch in the
transaction that acknowledges it): route, version, predictions, and the challenger's predictions when it
shadowed the request, for ``STREAMML_FEEDBACK_TTL_S``. Feedback — the true label of a request's record —
is joined with that answer (:meth:`FeedbackStore.record`) and added to running totals per route and
version, in total and per slice of the recent window: a confusion matrix for a classifier, error sums
for a regressor, and for a shadow pair McNemar's table of the records one version got right and the other
wrong. Each record's feedback is written with ``HSETNX`` in the same script as its increments, so the
same feedback twice counts once, and every key a script names shares the request's partition's hash tag.
Reports (:meth:`FeedbackStore.reports`) sum the partitions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from scipy.stats import binomtest

from streamml import keys
from streamml.errors import InvalidRequest, Problem
from streamml.models.dispatch import Scored
from streamml.output_kinds import PREDICT
from streamml.settings import FeedbackSettings
from streamml.stream.ids import as_text
from streamml.stream.topology import Partition, StreamTopology

SLICES = 12
"""The window is kept as this many slices, each expiring once it has left the window."""

WRITE_ANSWERS = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""

RECORD_FEEDBACK = """
local out, at = {}, 2
for i = 1, tonumber(ARGV[1]) do
  local hash = KEYS[tonumber(ARGV[at])]
  local index, label, hash_ttl, count = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], tonumber(ARGV[at + 4])
  at = at + 5
  if redis.call('HSETNX', hash, index, label) == 1 then
    redis.call('EXPIRE', hash, hash_ttl)
    for j = 1, count do
      local key, ttl = KEYS[tonumber(ARGV[at])], tonumber(ARGV[at + 3])
      redis.call('HINCRBYFLOAT', key, ARGV[at + 1], ARGV[at + 2])
      if ttl > 0 then redis.call('EXPIRE', key, ttl) end
      at = at + 4
    end
    out[i] = 1
  else
    at = at + count * 4
    out[i] = 0
  end
end
return out
"""
"""KEYS: every hash the batch names. ARGV: the number of records, then per record the index (in KEYS) of
its request's feedback hash, its record index, its label, that hash's TTL, the number of increments, and
those increments as (key index, field, amount, TTL or 0). Returns per record 1 if it was recorded now, 0
if it had been already."""


@dataclass(frozen=True)
class Answer:
    """What a request was answered: its version's predictions, and a challenger's when it shadowed them."""

    route: str
    version: str
    labels: list[Any]
    categorical: bool
    challenger: str | None = None
    challenger_labels: list[Any] | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {"r": self.route, "v": self.version, "l": self.labels, "c": self.categorical}
        if self.challenger is not None:
            body |= {"cv": self.challenger, "cl": self.challenger_labels}
        return orjson.dumps(body)

    @classmethod
    def decode(cls, raw: bytes) -> Answer:
        body = orjson.loads(raw)
        return cls(body["r"], body["v"], body["l"], body["c"], body.get("cv"), body.get("cl"))


def stage_answers(tx: Pipeline, partition: Partition, results: Sequence[Scored[Any]], ttl_s: int) -> None:
    """Keep what each request of a batch was answered (its predictions, not probabilities), as one
    command in the transaction that acknowledges the batch."""
    answered = [r for r in results if r.request.output == PREDICT]
    if not answered:
        return
    documents = [
        Answer(
            r.request.route,
            r.model.version,
            r.labels,
            r.categorical,
            r.shadow.model.version if r.shadow else None,
            r.shadow.labels if r.shadow else None,
        ).encode()
        for r in answered
    ]
    tx.eval(
        WRITE_ANSWERS,
        len(answered),
        *[partition.answer_key(r.request.request_id) for r in answered],
        ttl_s,
        *documents,
    )


@dataclass(frozen=True)
class Feedback:
    """The true label (or value) of one record of a request."""

    request_id: str
    record_index: int
    label: Any


FEEDBACK_SHAPE = "the body must be {'feedback': [{request_id, record_index, label}, ...]}"


def parse_feedback(body: Any, max_records: int) -> list[Feedback]:
    """``{"feedback": [{"request_id", "record_index", "label"}, ...]}`` (``record_index`` 0 when left
    out), or a 422 naming every field that is wrong."""
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise InvalidRequest([Problem(FEEDBACK_SHAPE, field="feedback")])
    if len(items) > max_records:
        message = f"{len(items)} feedback records in one request; at most {max_records}"
        raise InvalidRequest([Problem(message, field="feedback")])
    problems: list[Problem] = []
    out: list[Feedback] = []
    for index, item in enumerate(items):
        where = f"feedback[{index}]"
        if not isinstance(item, dict):
            problems.append(Problem(f"{where} must be an object", record=index, field=where))
            continue
        request_id, record_index, label = (
            item.get("request_id"),
            item.get("record_index", 0),
            item.get("label"),
        )
        wrong = []
        if not isinstance(request_id, str) or not request_id:
            wrong.append(("request_id", "a request id"))
        if isinstance(record_index, bool) or not isinstance(record_index, int) or record_index < 0:
            wrong.append(("record_index", "an integer from 0"))
        if label is None or isinstance(label, dict | list):
            wrong.append(("label", "a label or a number"))
        problems += [
            Problem(f"{where}.{name} must be {what}", record=index, field=f"{where}.{name}")
            for name, what in wrong
        ]
        if not wrong:
            out.append(Feedback(str(request_id), record_index, label))
    if problems:
        raise InvalidRequest(problems)
    return out


@dataclass
class FeedbackOutcome:
    """What became of a batch of feedback: recorded, repeated (counted once already), or not matched."""

    received: int = 0
    recorded: int = 0
    repeated: int = 0
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    """``{"index", "request_id", "record_index", "reason"}`` per record that matched no answer."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "recorded": self.recorded,
            "repeated": self.repeated,
            "unmatched": len(self.unmatched),
            "unmatched_records": self.unmatched[:100],
        }


class FeedbackStore:
    """Feedback joined with the answers workers kept, and the accuracy reports read back."""

    def __init__(
        self,
        redis: Redis,
        topology: StreamTopology,
        settings: FeedbackSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.topology = topology
        self.settings = settings
        self.clock = clock

    @property
    def slice_s(self) -> int:
        return max(1, math.ceil(self.settings.window_s / SLICES))

    async def record(
        self, items: Sequence[Feedback], may_send: Callable[[str], bool] = lambda route: True
    ) -> FeedbackOutcome:
        """Join each record's label with its request's answer and add it to the totals. A label of
        another type than the answer's predictions is refused (422 naming it) before anything is
        written; a request id no answer is kept for (unknown, or older than the feedback TTL) and a
        record index past its records are counted and listed, not refused. ``may_send``: whether the
        caller may send to a route (a key limited to other routes gets those records listed as
        unmatched)."""
        outcome = FeedbackOutcome(received=len(items))
        answers = await self._answers({item.request_id for item in items})
        problems: list[Problem] = []
        planned: dict[int, list[tuple[int, Feedback, Answer]]] = {}
        for index, item in enumerate(items):
            found = answers.get(item.request_id)
            if found is None or not may_send(found[1].route):
                reason = "no answer is kept for this request id (unknown, or older than the feedback TTL)"
            elif item.record_index >= len(found[1].labels):
                reason = f"the request has {len(found[1].labels)} records"
            else:
                reason = ""
            if found is None or reason:
                outcome.unmatched.append(
                    {
                        "index": index,
                        "request_id": item.request_id,
                        "record_index": item.record_index,
                        "reason": reason,
                    }
                )
                continue
            partition, answer = found
            expected = _label_kind(answer)
            if not _fits(item.label, expected):
                problems.append(
                    Problem(
                        f"feedback[{index}].label: {answer.route} v{answer.version} answers "
                        f"{expected}, got {type(item.label).__name__} {item.label!r}",
                        record=index,
                        field=f"feedback[{index}].label",
                    )
                )
                continue
            planned.setdefault(partition.index, []).append((index, item, answer))
        if problems:
            raise InvalidRequest(problems)
        for part_index, records in planned.items():
            flags = await self._write(self.topology.partitions[part_index], records)
            outcome.recorded += sum(flags)
            outcome.repeated += len(flags) - sum(flags)
        return outcome

    async def _answers(self, request_ids: set[str]) -> dict[str, tuple[Partition, Answer]]:
        located = [(rid, self.topology.partition_of(rid)) for rid in sorted(request_ids)]
        known = [(rid, part) for rid, part in located if part is not None]
        if not known:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid, part in known:
                pipe.get(part.answer_key(rid))
            raws = await pipe.execute()
        return {rid: (part, Answer.decode(raw)) for (rid, part), raw in zip(known, raws, strict=True) if raw}

    async def _write(self, partition: Partition, records: list[tuple[int, Feedback, Answer]]) -> list[int]:
        now = self.clock()
        bucket = int(now // self.slice_s)
        slice_ttl = self.settings.window_s + 2 * self.slice_s
        key_index: dict[str, int] = {}
        index_members: set[bytes] = set()

        def ref(key: str) -> str:
            return str(key_index.setdefault(key, len(key_index) + 1))

        args: list[Any] = [len(records)]
        for _, item, answer in records:
            increments = _increments(partition.stream, answer, item, bucket, slice_ttl)
            index_members |= {orjson.dumps(member) for member in _members(answer)}
            args += [
                ref(partition.feedback_key(item.request_id)),
                item.record_index,
                orjson.dumps(item.label),
            ]
            args += [self.settings.ttl_s, len(increments)]
            for key, name, amount, ttl in increments:
                args += [ref(key), name, amount, ttl]
        async with self.redis.pipeline(transaction=True) as tx:
            tx.eval(RECORD_FEEDBACK, len(key_index), *key_index, *args)
            tx.sadd(keys.accuracy_index_key(partition.stream), *index_members)
            flags, _ = await tx.execute()
        assert isinstance(flags, list)
        return [int(flag) for flag in flags]

    async def reports(self, route: str | None = None) -> list[dict[str, Any]]:
        """Per route and version: feedback counts (beside the route's records predicted, every version)
        and accuracy (per-class precision and recall) or MAE
        and RMSE, in total and over the recent window; and per shadow pair both versions' accuracy on
        the same labelled records with McNemar's exact test. Summed over the partitions."""
        parts = self.topology.partitions
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in parts:
                pipe.smembers(keys.accuracy_index_key(part.stream))
            indexes = await pipe.execute()
        members = sorted(
            {tuple(orjson.loads(m)) for m in set().union(*indexes)}, key=lambda m: (len(m), *map(_natural, m))
        )
        members = [m for m in members if route is None or m[0] == route]
        versions = [m for m in members if len(m) == 2]
        pairs = [m for m in members if len(m) == 3]
        bucket = int(self.clock() // self.slice_s)
        recent = range(bucket - SLICES + 1, bucket + 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for r, v in versions:
                for part in parts:
                    pipe.hgetall(keys.accuracy_key(part.stream, r, v))
                    for b in recent:
                        pipe.hgetall(keys.accuracy_key(part.stream, r, v, b))
            for r, champion, challenger in pairs:
                for part in parts:
                    pipe.hgetall(keys.accuracy_pair_key(part.stream, r, champion, challenger))
            routes = sorted({r for r, _ in versions})
            for r in routes:
                for part in parts:
                    pipe.hget(part.counters.predicted, r)
            replies = await pipe.execute()
        hashes = iter(replies)
        counted = replies[len(replies) - len(routes) * len(parts) :]
        predicted = {
            r: sum(int(n or 0) for n in counted[i * len(parts) : (i + 1) * len(parts)])
            for i, r in enumerate(routes)
        }
        out: list[dict[str, Any]] = []
        for r, v in versions:
            total: dict[str, float] = {}
            window: dict[str, float] = {}
            for _ in parts:
                _add(total, next(hashes))
                for _ in recent:
                    _add(window, next(hashes))
            out.append(
                {
                    "route": r,
                    "version": v,
                    "route_predicted": predicted[r],
                    "total": _summary(total),
                    "window": _summary(window),
                }
            )
        for r, champion, challenger in pairs:
            table: dict[str, float] = {}
            for _ in parts:
                _add(table, next(hashes))
            out.append({"route": r, "champion": champion, "challenger": challenger} | paired(table))
        return out


def paired(table: dict[str, float]) -> dict[str, Any]:
    """Both versions' accuracy on the same labelled records, and McNemar's exact test of the difference
    (the binomial test on the records exactly one of them got right)."""
    both, champion_only = int(table.get("both", 0)), int(table.get("champion_only", 0))
    challenger_only, neither = int(table.get("challenger_only", 0)), int(table.get("neither", 0))
    n = both + champion_only + challenger_only + neither
    discordant = champion_only + challenger_only
    p_value = binomtest(champion_only, discordant, 0.5).pvalue if discordant else 1.0
    return {
        "records": n,
        "champion_accuracy": (both + champion_only) / n if n else None,
        "challenger_accuracy": (both + challenger_only) / n if n else None,
        "table": {
            "both": both,
            "champion_only": champion_only,
            "challenger_only": challenger_only,
            "neither": neither,
        },
        "mcnemar_p": float(p_value),
    }


def challenger_is_better(pair: dict[str, Any] | None, alpha: float) -> tuple[bool, str]:
    """Whether a shadow pair's challenger was right more often than its champion on the same labelled
    records, with McNemar's exact test significant at ``alpha``; and why not, when not."""
    if pair is None or not pair["records"]:
        return False, "no labelled records the challenger shadowed yet: send feedback for shadowed requests"
    champion, challenger, p = pair["champion_accuracy"], pair["challenger_accuracy"], pair["mcnemar_p"]
    found = (
        f"on {pair['records']} labelled records the challenger (v{pair['challenger']}) was right "
        f"{challenger:.1%} of the time, the champion (v{pair['champion']}) {champion:.1%}; "
        f"McNemar p = {p:.3g}"
    )
    if challenger <= champion:
        return False, f"{found}: the challenger is not more accurate"
    if p >= alpha:
        return False, f"{found}: not significant at {alpha:g}"
    return True, found


def _summary(fields: dict[str, float]) -> dict[str, Any]:
    n = int(fields.get("n", 0))
    if "abs" in fields or "sq" in fields:
        return {
            "records": n,
            "mae": fields.get("abs", 0.0) / n if n else None,
            "rmse": math.sqrt(fields.get("sq", 0.0) / n) if n else None,
        }
    confusion: dict[tuple[Any, Any], int] = {}
    for name, count in fields.items():
        if name.startswith("c"):
            truth, predicted = orjson.loads(name[1:])
            confusion[(truth, predicted)] = int(count)
    right = sum(count for (truth, predicted), count in confusion.items() if truth == predicted)
    classes = sorted({c for pair in confusion for c in pair}, key=_natural)
    per_class = {}
    for label in classes:
        hits = confusion.get((label, label), 0)
        predicted = sum(count for (_, p), count in confusion.items() if p == label)
        actual = sum(count for (t, _), count in confusion.items() if t == label)
        per_class[str(label)] = {
            "precision": hits / predicted if predicted else None,
            "recall": hits / actual if actual else None,
            "support": actual,
        }
    return {
        "records": n,
        "accuracy": right / n if n else None,
        "classes": per_class,
        "confusion": [
            {"label": t, "predicted": p, "records": c} for (t, p), c in sorted(confusion.items(), key=str)
        ],
    }


def _increments(
    stream: str, answer: Answer, item: Feedback, bucket: int, slice_ttl: int
) -> list[tuple[str, str, float, int]]:
    """(key, field, amount, ttl or 0) for one labelled record."""
    predicted = answer.labels[item.record_index]
    out: list[tuple[str, str, float, int]] = []
    for key, ttl in (
        (keys.accuracy_key(stream, answer.route, answer.version), 0),
        (keys.accuracy_key(stream, answer.route, answer.version, bucket), slice_ttl),
    ):
        out.append((key, "n", 1, ttl))
        if answer.categorical:
            out.append((key, "c" + orjson.dumps([item.label, predicted]).decode(), 1, ttl))
        else:
            error = float(item.label) - float(predicted)
            out += [(key, "abs", abs(error), ttl), (key, "sq", error * error, ttl)]
    if answer.categorical and answer.challenger is not None and answer.challenger_labels is not None:
        champion_right = predicted == item.label
        challenger_right = answer.challenger_labels[item.record_index] == item.label
        cell = {(True, True): "both", (True, False): "champion_only", (False, True): "challenger_only"}.get(
            (champion_right, challenger_right), "neither"
        )
        out.append(
            (keys.accuracy_pair_key(stream, answer.route, answer.version, answer.challenger), cell, 1, 0)
        )
    return out


def _members(answer: Answer) -> list[list[str]]:
    members = [[answer.route, answer.version]]
    if answer.categorical and answer.challenger is not None:
        members.append([answer.route, answer.version, answer.challenger])
    return members


def _label_kind(answer: Answer) -> str:
    if not answer.categorical:
        return "numbers"
    kinds = {type(label) for label in answer.labels}
    if kinds <= {str}:
        return "text labels"
    if kinds <= {bool}:
        return "true or false"
    return "integer labels"


def _fits(label: Any, kind: str) -> bool:
    if kind == "numbers":
        return isinstance(label, int | float) and not isinstance(label, bool) and math.isfinite(label)
    if kind == "text labels":
        return isinstance(label, str)
    if kind == "true or false":
        return isinstance(label, bool)
    return isinstance(label, int) and not isinstance(label, bool) and -(2**63) <= label < 2**63


def _add(total: dict[str, float], fields: dict[Any, Any]) -> None:
    for name, value in fields.items():
        key = as_text(name)
        total[key] = total.get(key, 0.0) + float(as_text(value))


def _natural(value: Any) -> tuple[int, Any]:
    text = str(value)
    return (0, int(text)) if text.isdigit() else (1, text)
