"""Batch dispatch: the one place where inference happens.

Requests (anything with a ``route`` and ``records``) go in; each comes out either scored, with its
labels stamped with the model version that made them, or unscored, with the reason. Three steps:

1. **plan**: group the requests by the model version their route resolves to now, sending a route's
   canary share (:mod:`streamml.models.traffic`) to its challenger;
2. **score**: one ``predict`` per group, canary groups first; a call that fails is split in halves until
   the poison requests are isolated, so one bad record never fails the good ones beside it, and what a
   challenger cannot answer its champion answers;
3. **shadow**: a sampled share of each champion's requests is also scored by the challenger, never
   answered with it. Nothing the challenger does can fail, retry or delay a request: its errors are
   counted in :class:`ShadowRun`.

No Redis and no HTTP: the stream worker hands it entries, tests hand it plain objects (MLServer's
``handlers/dataplane.py`` plays this part there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from streamml.errors import FailureReason, ModelLoadError, ModelUnavailable, UnknownRoute, UnsupportedOutput
from streamml.models.inference import LoadedModel
from streamml.models.loader import ModelLoader
from streamml.models.refs import ModelRef
from streamml.models.registry import ModelRegistry
from streamml.models.traffic import Rollout, in_canary, in_shadow_sample
from streamml.output_kinds import PREDICT
from streamml.rows import Rows

log = logging.getLogger(__name__)

INLINE_RECORDS = 64
"""Groups of up to this many records are predicted on the event loop: a thread hop costs more than
the work itself (~0.1 ms on the numpy path). Larger ones go to a thread so the loop keeps serving
(heart-beats, keep-alive re-marking of in-flight entries)."""


class Scorable(Protocol):
    """What dispatch needs of a request: which route, the validated records, and what it asks for
    (``output_kinds.PREDICT`` or ``PROBA``)."""

    @property
    def route(self) -> str: ...

    @property
    def request_id(self) -> str: ...

    @property
    def rows(self) -> Rows: ...

    @property
    def output(self) -> str: ...


R = TypeVar("R", bound=Scorable)


@dataclass(frozen=True)
class ShadowLabels:
    model: ModelRef
    labels: list[Any]


@dataclass(frozen=True)
class Scored(Generic[R]):
    """A request's predictions, one JSON value per record, and the model version that made them."""

    request: R
    model: ModelRef
    labels: list[Any]
    """One value per record, with the model's types (a label, a number, an object of columns, a list
    of probabilities)."""
    predicted_ms: float
    """Epoch ms when the predict call returned."""
    predict_ms: float
    """Duration of the (batched) predict call this request was part of."""
    canary: bool = False
    """Answered by the challenger (``model``) as part of the route's canary share."""
    shadow: ShadowLabels | None = None
    """The challenger's labels for the same records (shadow scoring), never returned to the client."""
    categorical: bool = False
    """The values are class labels: counted by class, compared label by label with a challenger's."""
    columns: list[str] | None = None
    """The model answered a dict of arrays: MLflow's protocol lays the answer out as one object of lists."""
    classes: list[Any] | None = None
    """With probabilities: the class each position of a record's list stands for."""
    batch_rows: Rows | None = None
    """The records of the whole predict call this request was part of. The model has read them, and
    they keep the Arrow table it read them through: a sink that wants every record's inputs reuses it
    instead of converting the records again."""
    batch_offset: int = 0
    """Where this request's records start in ``batch_rows``."""


@dataclass(frozen=True)
class Unscored(Generic[R]):
    """A request that could not be scored, and why."""

    request: R
    reason: FailureReason
    error: BaseException


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


async def predict_batch(
    requests: Sequence[R], registry: ModelRegistry, rollout: Rollout | None = None
) -> Dispatched[R]:
    """Score every request with its route's current model version (one predict per version), then let
    challengers shadow the champions' requests."""
    rollout = rollout or Rollout()
    plan = await _plan(requests, registry, rollout)
    scored, failed, champions = await _score(plan, registry.loader)
    shadows, scored = await _shadow_champions(champions, scored, registry, rollout)
    return Dispatched(scored, plan.failed + failed, shadows)


# -- 1. plan -----------------------------------------------------------------------------------------


@dataclass
class _Group(Generic[R]):
    """Requests that one model version scores in one call (its predict, or its predict_proba)."""

    ref: ModelRef
    canary: bool
    output: str
    members: list[R] = field(default_factory=list)


@dataclass
class _Plan(Generic[R]):
    groups: dict[tuple[str, str, bool, str], _Group[R]] = field(default_factory=dict)
    champions: dict[str, ModelRef] = field(default_factory=dict)
    """Route -> its champion, which answers what the route's canary cannot."""
    failed: list[Unscored[R]] = field(default_factory=list)

    def add(self, ref: ModelRef, canary: bool, request: R) -> None:
        key = (ref.name, ref.version, canary, request.output)
        self.groups.setdefault(key, _Group(ref, canary, request.output)).members.append(request)

    def to_champion(self, requests: Sequence[R]) -> None:
        """A canary never fails a request: what the challenger could not answer, the champion answers."""
        for request in requests:
            self.add(self.champions[request.route], False, request)

    def phase(self, canary: bool) -> list[_Group[R]]:
        return [group for group in self.groups.values() if group.canary is canary]


@dataclass(frozen=True)
class _RouteChoice:
    champion: ModelRef | None = None
    canary: ModelRef | None = None
    failure: tuple[FailureReason, Exception] | None = None


async def _plan(requests: Sequence[R], registry: ModelRegistry, rollout: Rollout) -> _Plan[R]:
    plan: _Plan[R] = _Plan()
    choices: dict[str, _RouteChoice] = {}
    for request in requests:
        route = request.route
        if route not in choices:
            choices[route] = await _choose(registry, route, rollout.canary.get(route, 0.0))
        choice = choices[route]
        if choice.champion is None:
            assert choice.failure is not None
            plan.failed.append(Unscored(request, *choice.failure))
            continue
        plan.champions[route] = choice.champion
        if choice.canary is not None and in_canary(request.request_id, rollout.canary[route]):
            plan.add(choice.canary, True, request)
        else:
            plan.add(choice.champion, False, request)
    return plan


async def _choose(registry: ModelRegistry, route: str, canary_share: float) -> _RouteChoice:
    """The route's champion, and the challenger answering its canary share if there is one that can."""
    try:
        champion = await registry.resolver.resolve(route)
    except UnknownRoute as exc:
        return _RouteChoice(failure=(FailureReason.UNKNOWN_MODEL, exc))
    except ModelUnavailable as exc:
        return _RouteChoice(failure=(load_failure(exc), exc))
    if canary_share <= 0:
        return _RouteChoice(champion)
    challenger = await registry.resolver.challenger(route)
    if challenger is None or challenger.version == champion.version:
        return _RouteChoice(champion)
    try:
        if registry.loader.recent_failure(challenger) is None:
            reason = await registry.catalog.incompatibility(champion, challenger)
            if reason is None:
                return _RouteChoice(champion, challenger)
            log.warning("canary of %s stays on the champion: the challenger %s", route, reason)
    except ModelUnavailable as exc:
        log.warning("canary of %s stays on the champion: %s", route, exc)
    return _RouteChoice(champion)


# -- 2. score ----------------------------------------------------------------------------------------

Champions = list[tuple[ModelRef, list[Scored[R]]]]


async def _score(
    plan: _Plan[R], loader: ModelLoader
) -> tuple[list[Scored[R]], list[Unscored[R]], Champions[R]]:
    """One predict per group, canary groups first: what a challenger fails joins its champion's group."""
    scored: list[Scored[R]] = []
    failed: list[Unscored[R]] = []
    champions: Champions[R] = []
    for canary in (True, False):
        for group in plan.phase(canary):
            try:
                model = await loader.load(group.ref)
            except ModelUnavailable as exc:  # includes ModelLoadError
                if canary:
                    plan.to_champion(group.members)
                else:
                    failed += [Unscored(r, load_failure(exc), exc) for r in group.members]
                continue
            count = sum(len(r.rows) for r in group.members)
            done, poison = await _run(
                predict_isolating, model, group.ref, group.members, canary, group.output, records=count
            )
            scored += done
            if canary:
                plan.to_champion([u.request for u in poison])
            else:
                failed += poison
                champions.append((group.ref, done))
    return scored, failed, champions


async def _run(
    function: Callable[..., Any],
    model: LoadedModel,
    ref: ModelRef,
    members: Sequence[Any],
    *args: Any,
    records: int,
) -> Any:
    """Small predict calls on the event loop (a thread hop costs more), large ones in a thread."""
    if records <= INLINE_RECORDS:
        return function(model, ref, members, *args)
    return await asyncio.to_thread(function, model, ref, members, *args)


def load_failure(exc: ModelUnavailable) -> FailureReason:
    """A version this worker cannot serve fails its requests at once; one it cannot reach now, later."""
    return (
        FailureReason.MODEL_NOT_SERVABLE
        if isinstance(exc, ModelLoadError)
        else FailureReason.MODEL_LOAD_FAILED
    )


def predict_isolating(
    model: LoadedModel, ref: ModelRef, requests: Sequence[R], canary: bool = False, output: str = PREDICT
) -> tuple[list[Scored[R]], list[Unscored[R]]]:
    """One call for all requests; if it fails, split in halves until the bad ones are found (a request
    for an output the model does not have fails whole: no half of it would do better)."""
    rows = Rows.concat([request.rows for request in requests])
    started = time.perf_counter()
    try:
        outputs = model.outputs(rows, output)
    except UnsupportedOutput as exc:
        return [], [Unscored(r, FailureReason.UNSUPPORTED_OUTPUT, exc) for r in requests]
    except Exception as exc:
        if len(requests) == 1:
            return [], [Unscored(requests[0], FailureReason.PREDICTION_FAILED, exc)]
        middle = len(requests) // 2
        left = predict_isolating(model, ref, requests[:middle], canary, output)
        right = predict_isolating(model, ref, requests[middle:], canary, output)
        return left[0] + right[0], left[1] + right[1]
    predicted_ms = time.time() * 1000.0
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    categorical = output == PREDICT and outputs.categorical
    out: list[Scored[R]] = []
    offset = 0
    for request in requests:
        values = outputs.values[offset : offset + len(request.rows)]
        offset += len(request.rows)
        out.append(
            Scored(
                request,
                ref,
                values,
                predicted_ms,
                elapsed_ms,
                canary,
                categorical=categorical,
                columns=outputs.columns,
                classes=outputs.classes,
                batch_rows=rows,
                batch_offset=offset - len(request.rows),
            )
        )
    return out, []


# -- 3. shadow ---------------------------------------------------------------------------------------


async def _shadow_champions(
    champions: Champions[R], scored: list[Scored[R]], registry: ModelRegistry, rollout: Rollout
) -> tuple[list[ShadowRun], list[Scored[R]]]:
    """Each route's challenger scores a sample of its champion's results; those results come back
    carrying the challenger's labels."""
    shadows: list[ShadowRun] = []
    replaced: dict[int, Scored[R]] = {}  # id of a champion's result -> the same with the shadow's labels
    for ref, done in champions:
        by_route: dict[str, list[Scored[R]]] = {}
        for result in done:
            # A challenger shadows class labels (compared label by label), not probabilities or values.
            if result.request.output == PREDICT and result.categorical:
                by_route.setdefault(result.request.route, []).append(result)
        for route, results in by_route.items():
            challenger = await registry.resolver.challenger(route)
            if challenger is None or challenger.version == ref.version:
                continue
            run = ShadowRun(route, ref, challenger)
            shadows.append(run)
            chosen = [r for r in results if in_shadow_sample(r.request.request_id, rollout.sample(route))]
            run.sampled_out = _records(results) - _records(chosen)
            if chosen:
                replaced |= {id(old): new for old, new in await _shadow(registry, run, chosen)}
    return shadows, [replaced.get(id(s), s) for s in scored] if replaced else scored


async def _shadow(
    registry: ModelRegistry, run: ShadowRun, chosen: list[Scored[R]]
) -> list[tuple[Scored[R], Scored[R]]]:
    """Score the chosen results' records with the challenger; every failure is counted in ``run``,
    none raised. Returns (champion's result, the same with the challenger's labels) pairs."""
    records = _records(chosen)
    failure = registry.loader.recent_failure(run.challenger)
    if failure is not None:  # counted, not retried (nor logged) on every batch
        run.errors, run.error = records, failure
        return []
    try:
        run.incompatible = await registry.catalog.incompatibility(run.champion, run.challenger)
        if run.incompatible is not None:
            return []
        model = await registry.loader.load(run.challenger)
        labels, run.challenger_ms = await _run(_predict_timed, model, run.challenger, chosen, records=records)
    except Exception as exc:  # the challenger never fails the champion's requests
        run.errors, run.error = records, f"{type(exc).__name__}: {exc}"
        log.warning("challenger %s v%s failed to score: %s", run.challenger.name, run.challenger.version, exc)
        return []
    run.champion_ms = chosen[0].predict_ms
    pairs, offset = [], 0
    for result in chosen:
        count = len(result.labels)
        shadow = ShadowLabels(run.challenger, labels[offset : offset + count])
        pairs.append((result, replace(result, shadow=shadow)))
        offset += count
    return pairs


def _predict_timed(
    model: LoadedModel, ref: ModelRef, results: Sequence[Scored[Any]]
) -> tuple[list[Any], float]:
    rows = Rows.concat([result.request.rows for result in results])
    started = time.perf_counter()
    outputs = model.predict(rows)
    return outputs.values, (time.perf_counter() - started) * 1000.0


def _records(results: Sequence[Scored[Any]]) -> int:
    return sum(len(r.labels) for r in results)
