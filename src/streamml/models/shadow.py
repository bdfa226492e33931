"""Shadow scoring's running aggregates, per (route, champion version, challenger version).

A batch's shadow runs become increments (:func:`increments`) that every worker adds to the same Redis hash
in the transaction that acknowledges the batch, so the totals hold for all workers together; a report
(:class:`ShadowReport`) is read back from that hash. Aggregates are kept per version pair and never mixed:
when the champion moves during a shadow run, the new pair starts from zero.

Only counts are stored. The flip matrix (champion label -> challenger label, per record) carries the rest:
its diagonal is the agreement, its row sums the champion's class mix, its column sums the challenger's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamml.models.dispatch import Scored, ShadowRun

SEPARATOR = "\x1f"
"""Between the labels of a flip field (labels may contain anything but control characters)."""
FLIP_PREFIX = f"flip{SEPARATOR}"
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class PairKey:
    route: str
    model: str
    champion: str
    challenger: str


def increments(run: ShadowRun, results: Sequence[Scored[Any]]) -> dict[str, float]:
    """What one shadow run adds to its pair's hash: counts, flips, predict times."""
    flips: Counter[tuple[str, str]] = Counter()
    for result in results:
        if result.shadow is not None and result.request.route == run.route and result.model == run.champion:
            flips.update(zip(map(str, result.labels), map(str, result.shadow.labels), strict=True))
    compared = sum(flips.values())
    out: dict[str, float] = {
        "compared": compared,
        "sampled_out": run.sampled_out,
        "errors": run.errors,
        "batches": 1 if compared else 0,
        "champion_ms": run.champion_ms if compared else 0.0,
        "challenger_ms": run.challenger_ms if compared else 0.0,
    }
    out |= {f"{FLIP_PREFIX}{a}{SEPARATOR}{b}": n for (a, b), n in flips.items()}
    return {field: value for field, value in out.items() if value}


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (sound near 0 and 1, unlike the normal one)."""
    if trials == 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ShadowReport:
    pair: PairKey
    compared: int
    sampled_out: int
    errors: int
    flips: dict[str, dict[str, int]]
    """Champion label -> challenger label -> records."""
    batches: int
    champion_ms: float
    challenger_ms: float
    last_error: str | None
    incompatible: str | None

    @classmethod
    def from_fields(cls, pair: PairKey, fields: Mapping[str, str]) -> ShadowReport:
        flips: dict[str, dict[str, int]] = {}
        for field, value in fields.items():
            if field.startswith(FLIP_PREFIX):
                champion, challenger = field[len(FLIP_PREFIX) :].split(SEPARATOR, 1)
                flips.setdefault(champion, {})[challenger] = int(value)

        def number(name: str) -> float:
            return float(fields.get(name, 0) or 0)

        return cls(
            pair,
            int(number("compared")),
            int(number("sampled_out")),
            int(number("errors")),
            flips,
            int(number("batches")),
            number("champion_ms"),
            number("challenger_ms"),
            fields.get("last_error") or None,
            fields.get("incompatible") or None,
        )

    @property
    def agreed(self) -> int:
        return sum(row.get(label, 0) for label, row in self.flips.items())

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def class_mix(self, role: str) -> dict[str, int]:
        """Records per label as the champion (``role="champion"``) or the challenger answered."""
        mix: Counter[str] = Counter()
        for champion, row in self.flips.items():
            for challenger, n in row.items():
                mix[champion if role == "champion" else challenger] += n
        return dict(sorted(mix.items()))

    def as_dict(self) -> dict[str, Any]:
        interval = wilson_interval(self.agreed, self.compared)

        def per_batch(total: float) -> float | None:
            return round(total / self.batches, 3) if self.batches else None

        return {
            "route": self.pair.route,
            "model": self.pair.model,
            "champion_version": self.pair.champion,
            "challenger_version": self.pair.challenger,
            "records_compared": self.compared,
            "records_sampled_out": self.sampled_out,
            "challenger_errors": self.errors,
            "agreement": None if self.agreement is None else round(self.agreement, 6),
            "agreement_95": None if interval is None else [round(interval[0], 6), round(interval[1], 6)],
            "flips": self.flips,
            "champion_classes": self.class_mix("champion"),
            "challenger_classes": self.class_mix("challenger"),
            "batches_compared": self.batches,
            "champion_predict_ms_per_batch": per_batch(self.champion_ms),
            "challenger_predict_ms_per_batch": per_batch(self.challenger_ms),
            "last_error": self.last_error,
            "incompatible": self.incompatible,
        }
