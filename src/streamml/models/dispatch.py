"""Batch dispatch: the one place where inference happens.

Requests (anything with a ``route`` and ``records``) go in; each comes out either scored, with its
labels stamped with the model version that made them, or unscored, with the reason. Requests are
grouped by the model version their route resolves to now; each group costs one ``predict`` call, and
a call that fails is split in halves until the poison requests are isolated, so one bad record never
fails the good ones beside it.

A route's model may have a challenger (the ``challenger`` alias): a canary share of requests, chosen
by request id so a retried request gets the same model, is *answered* by it; of the others, a sampled
share is also scored by it after the champion (shadow scoring), never answered with it. Nothing the
challenger does can fail, retry or delay a request: its errors are counted in :class:`ShadowRun`.

No Redis and no HTTP: the stream worker hands it entries, tests hand it plain objects (MLServer's
``handlers/dataplane.py`` plays this part there).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from streamml.errors import FailureReason, ModelUnavailable, UnknownRoute
from streamml.models.inference import LoadedModel
from streamml.models.registry import ModelRef, ModelRegistry

log = logging.getLogger(__name__)

INLINE_RECORDS = 64
"""Groups of up to this many records are predicted on the event loop: a thread hop costs more than
the work itself (~0.1 ms on the numpy path). Larger ones go to a thread so the loop keeps serving
(heart-beats, keep-alive re-marking of in-flight entries)."""


class Scorable(Protocol):
    """What dispatch needs of a request: which route, and the validated records."""

    @property
    def route(self) -> str: ...

    @property
    def request_id(self) -> str: ...

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
    canary: bool = False
    """Answered by the challenger (``model``) as part of the route's canary share."""
    shadow: ShadowLabels | None = None
    """The challenger's labels for the same records (shadow scoring), never returned to the client."""


@dataclass(frozen=True)
class ShadowLabels:
    model: ModelRef
    labels: list[str]


@dataclass(frozen=True)
class Rollout:
    """How challengers take part: the share of each route's requests a challenger answers (canary),
    and the share of the rest it also scores in the shadow of the champion."""

    canary: Mapping[str, float] = field(default_factory=dict)
    shadow_sample: Mapping[str, float] | float = 1.0

    def sample(self, route: str) -> float:
        if isinstance(self.shadow_sample, Mapping):
            return float(self.shadow_sample.get(route, 1.0))
        return self.shadow_sample


@dataclass
class ShadowRun:
    """What shadow scoring did for one (route, champion version, challenger version) in a batch; the
    compared records are the :class:`Scored` results that carry ``shadow`` labels."""

    route: str
    champion: ModelRef
    challenger: ModelRef
    sampled_out: int = 0
    """Records not shadowed because of the sampling rate."""
    errors: int = 0
    """Records the challenger failed to score (it did not load, or its predict raised)."""
    error: str | None = None
    incompatible: str | None = None
    """Why the challenger cannot shadow this champion at all (inputs or classes differ)."""
    champion_ms: float = 0.0
    """The champion's predict time on the batch the challenger scored too."""
    challenger_ms: float = 0.0


@dataclass
class Dispatched(Generic[R]):
    scored: list[Scored[R]]
    unscored: list[Unscored[R]]
    shadows: list[ShadowRun]


@dataclass(frozen=True)
class Unscored(Generic[R]):
    """A request that could not be scored, and why."""

    request: R
    reason: FailureReason
    error: BaseException


def share(request_id: str, purpose: bytes) -> float:
    """A request's fixed place in [0, 1) for one purpose: the same in every process and on every retry."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, person=purpose).digest()
    return int.from_bytes(digest, "big") / 2**64


def in_canary(request_id: str, fraction: float) -> bool:
    return fraction > 0 and share(request_id, b"canary") < fraction


def in_shadow_sample(request_id: str, sample: float) -> bool:
    return sample >= 1 or share(request_id, b"shadow") < sample


async def predict_batch(
    requests: Sequence[R], registry: ModelRegistry, rollout: Rollout | None = None
) -> Dispatched[R]:
    """Score every request with its route's current model version (one predict per version), then let
    challengers shadow the champions' requests."""
    rollout = rollout or Rollout()
    scored: list[Scored[R]] = []
    failed: list[Unscored[R]] = []
    groups: dict[tuple[str, str, bool], tuple[ModelRef, list[R]]] = {}
    refs: dict[str, ModelRef | ModelUnavailable] = {}
    canaries: dict[str, ModelRef | None] = {}
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
            canaries[route] = await _canary_model(registry, refs[route], rollout.canary.get(route, 0.0))
        ref = refs[route]
        if isinstance(ref, ModelUnavailable):
            failed.append(Unscored(request, FailureReason.MODEL_LOAD_FAILED, ref))
            continue
        canary = canaries[route]
        if canary is not None and in_canary(request.request_id, rollout.canary[route]):
            groups.setdefault((canary.name, canary.version, True), (canary, []))[1].append(request)
        else:
            groups.setdefault((ref.name, ref.version, False), (ref, []))[1].append(request)

    champions: list[tuple[ModelRef, list[Scored[R]]]] = []
    # Canary groups first: what the challenger fails to answer joins the champion's group.
    for canary_phase in (True, False):
        for is_canary, (ref, members) in [(k[2], g) for k, g in groups.items() if k[2] is canary_phase]:
            try:
                model = registry.loaded(ref)
                if model is None:
                    model = await asyncio.to_thread(registry.load, ref)
            except ModelUnavailable as exc:  # includes ModelLoadError
                if is_canary:
                    _to_champion(groups, refs, members)
                else:
                    failed += [Unscored(r, FailureReason.MODEL_LOAD_FAILED, exc) for r in members]
                continue
            count = sum(len(r.records) for r in members)
            done, poison = await _run(predict_isolating, model, ref, members, is_canary, records=count)
            scored += done
            if is_canary:
                _to_champion(groups, refs, [u.request for u in poison])
            else:
                failed += poison
                champions.append((ref, done))
    shadows: list[ShadowRun] = []
    replaced: dict[int, Scored[R]] = {}  # id of a champion's result -> the same with the shadow's labels
    for ref, done in champions:
        by_route: dict[str, list[Scored[R]]] = {}
        for result in done:
            by_route.setdefault(result.request.route, []).append(result)
        for route, results in by_route.items():
            challenger = await registry.achallenger(route)
            if challenger is not None and challenger.version != ref.version:
                run, shadowed = await _shadow(registry, ref, challenger, results, rollout.sample(route))
                shadows.append(run)
                replaced |= {id(old): new for old, new in shadowed}
    if replaced:
        scored = [replaced.get(id(s), s) for s in scored]
    return Dispatched(scored, failed, shadows)


def _to_champion(
    groups: dict[tuple[str, str, bool], tuple[ModelRef, list[R]]],
    refs: Mapping[str, ModelRef | ModelUnavailable],
    requests: Sequence[R],
) -> None:
    """A canary never fails a request: what the challenger could not answer, the champion answers."""
    for request in requests:
        champion = refs[request.route]
        assert isinstance(champion, ModelRef)  # canaries exist only for routes that resolved
        groups.setdefault((champion.name, champion.version, False), (champion, []))[1].append(request)


async def _run(
    function: Any, model: LoadedModel, ref: ModelRef, members: Sequence[Any], *args: Any, records: int
) -> Any:
    """Small predict calls on the event loop (a thread hop costs more), large ones in a thread."""
    if records <= INLINE_RECORDS:
        return function(model, ref, members, *args)
    return await asyncio.to_thread(function, model, ref, members, *args)


async def _canary_model(
    registry: ModelRegistry, champion: ModelRef | ModelUnavailable, fraction: float
) -> ModelRef | None:
    """The challenger that answers the route's canary share, if there is one that can."""
    if fraction <= 0 or isinstance(champion, ModelUnavailable):
        return None
    challenger = await registry.achallenger(champion.route)
    if challenger is None or challenger.version == champion.version:
        return None
    try:
        if registry.recent_load_failure(challenger) is None:
            reason = await registry.aincompatibility(champion, challenger)
            if reason is None:
                return challenger
            log.warning("canary of %s stays on the champion: the challenger %s", champion.route, reason)
    except ModelUnavailable as exc:
        log.warning("canary of %s stays on the champion: %s", champion.route, exc)
    return None


async def _shadow(
    registry: ModelRegistry,
    champion: ModelRef,
    challenger: ModelRef,
    results: list[Scored[R]],
    sample: float,
) -> tuple[ShadowRun, list[tuple[Scored[R], Scored[R]]]]:
    """Score the sampled results' records with the challenger; every failure is counted, none raised."""
    run = ShadowRun(results[0].request.route, champion, challenger)
    chosen = [r for r in results if in_shadow_sample(r.request.request_id, sample)]
    run.sampled_out = sum(len(r.labels) for r in results) - sum(len(r.labels) for r in chosen)
    if not chosen:
        return run, []
    records = sum(len(r.labels) for r in chosen)
    failure = registry.recent_load_failure(challenger)
    if failure is not None:  # counted, not retried (nor logged) on every batch
        run.errors, run.error = records, failure
        return run, []
    try:
        run.incompatible = await registry.aincompatibility(champion, challenger)
        if run.incompatible is not None:
            return run, []
        model = registry.loaded(challenger)
        if model is None:
            model = await asyncio.to_thread(registry.load, challenger)
        labels, run.challenger_ms = await _run(_predict_timed, model, challenger, chosen, records=records)
    except Exception as exc:  # the challenger never fails the champion's requests
        run.errors, run.error = records, f"{type(exc).__name__}: {exc}"
        log.warning("challenger %s v%s failed to score: %s", challenger.name, challenger.version, exc)
        return run, []
    run.champion_ms = chosen[0].predict_ms
    pairs = []
    offset = 0
    for result in chosen:
        count = len(result.labels)
        shadow = ShadowLabels(challenger, labels[offset : offset + count])
        pairs.append((result, replace(result, shadow=shadow)))
        offset += count
    return run, pairs


def _predict_timed(
    model: LoadedModel, ref: ModelRef, results: Sequence[Scored[Any]]
) -> tuple[list[str], float]:
    records = [record for result in results for record in result.request.records]
    started = time.perf_counter()
    labels = model.predict(records)
    return labels, (time.perf_counter() - started) * 1000.0


def predict_isolating(
    model: LoadedModel, ref: ModelRef, requests: Sequence[R], canary: bool = False
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
        left = predict_isolating(model, ref, requests[:middle], canary)
        right = predict_isolating(model, ref, requests[middle:], canary)
        return left[0] + right[0], left[1] + right[1]
    predicted_ms = time.time() * 1000.0
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    out: list[Scored[R]] = []
    offset = 0
    for request in requests:
        count = len(request.records)
        out.append(Scored(request, ref, labels[offset : offset + count], predicted_ms, elapsed_ms, canary))
        offset += count
    return out, []
