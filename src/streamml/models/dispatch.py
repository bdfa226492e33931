"""Batch dispatch: the one place where inference happens.

Requests (anything with a ``route`` and ``records``) go in; each comes out either scored, with its
labels stamped with the model version that made them, or unscored, with the reason. Requests are
grouped by the model version their route resolves to now; each group costs one ``predict`` call, and
a call that fails is split in halves until the poison requests are isolated, so one bad record never
fails the good ones beside it.

No Redis and no HTTP: the stream worker hands it entries, tests hand it plain objects (MLServer's
``handlers/dataplane.py`` plays this part there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from streamml.errors import FailureReason, ModelUnavailable, UnknownRoute
from streamml.models.inference import LoadedModel
from streamml.models.registry import ModelRef, ModelRegistry

INLINE_RECORDS = 64
"""Groups of up to this many records are predicted on the event loop: a thread hop costs more than
the work itself (~0.1 ms on the numpy path). Larger ones go to a thread so the loop keeps serving
(heart-beats, keep-alive re-marking of in-flight entries)."""


class Scorable(Protocol):
    """What dispatch needs of a request: which route, and the validated records."""

    @property
    def route(self) -> str: ...

    @property
    def records(self) -> list[dict[str, Any]]: ...


R = TypeVar("R", bound=Scorable)


@dataclass(frozen=True)
class Scored(Generic[R]):
    """A request's labels, one per record, and the model version that made them."""

    request: R
    model: ModelRef
    labels: list[str]
    predicted_ms: float
    """Epoch ms when the predict call returned."""
    predict_ms: float
    """Duration of the (batched) predict call this request was part of."""


@dataclass(frozen=True)
class Unscored(Generic[R]):
    """A request that could not be scored, and why."""

    request: R
    reason: FailureReason
    error: BaseException


async def predict_batch(
    requests: Sequence[R], registry: ModelRegistry
) -> tuple[list[Scored[R]], list[Unscored[R]]]:
    """Score every request with its route's current model version: one predict per version."""
    scored: list[Scored[R]] = []
    failed: list[Unscored[R]] = []
    groups: dict[tuple[str, str], tuple[ModelRef, list[R]]] = {}
    refs: dict[str, ModelRef | ModelUnavailable] = {}
    for request in requests:
        route = request.route
        if route not in refs:
            try:
                refs[route] = await registry.aresolve(route)
            except UnknownRoute as exc:
                failed.append(Unscored(request, FailureReason.UNKNOWN_MODEL, exc))
                continue
            except ModelUnavailable as exc:
                refs[route] = exc
        ref = refs[route]
        if isinstance(ref, ModelUnavailable):
            failed.append(Unscored(request, FailureReason.MODEL_LOAD_FAILED, ref))
            continue
        groups.setdefault((ref.name, ref.version), (ref, []))[1].append(request)

    for ref, members in groups.values():
        try:
            model = registry.loaded(ref)
            if model is None:
                model = await asyncio.to_thread(registry.load, ref)
        except ModelUnavailable as exc:  # includes ModelLoadError
            failed += [Unscored(r, FailureReason.MODEL_LOAD_FAILED, exc) for r in members]
            continue
        if sum(len(r.records) for r in members) <= INLINE_RECORDS:
            done, poison = predict_isolating(model, ref, members)
        else:
            done, poison = await asyncio.to_thread(predict_isolating, model, ref, members)
        scored += done
        failed += poison
    return scored, failed


def predict_isolating(
    model: LoadedModel, ref: ModelRef, requests: Sequence[R]
) -> tuple[list[Scored[R]], list[Unscored[R]]]:
    """One predict call for all requests; if it fails, split in halves until the bad ones are found."""
    records = [record for request in requests for record in request.records]
    started = time.perf_counter()
    try:
        labels = model.predict(records)
    except Exception as exc:
        if len(requests) == 1:
            return [], [Unscored(requests[0], FailureReason.PREDICTION_FAILED, exc)]
        middle = len(requests) // 2
        left = predict_isolating(model, ref, requests[:middle])
        right = predict_isolating(model, ref, requests[middle:])
        return left[0] + right[0], left[1] + right[1]
    predicted_ms = time.time() * 1000.0
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    out: list[Scored[R]] = []
    offset = 0
    for request in requests:
        count = len(request.records)
        out.append(Scored(request, ref, labels[offset : offset + count], predicted_ms, elapsed_ms))
        offset += count
    return out, []
