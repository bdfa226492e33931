"""How a route's requests divide between its champion and its challenger: a canary share of them is
*answered* by the challenger, and of the others a sampled share is also scored by it in the champion's
shadow. A request's place is fixed by its id (the same in every process and on every retry), so a
retried request meets the same model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rollout:
    """The canary share of each route, and the share of the rest its challenger shadows."""

    canary: Mapping[str, float] = field(default_factory=dict)
    shadow_sample: Mapping[str, float] | float = 1.0

    def sample(self, route: str) -> float:
        if isinstance(self.shadow_sample, Mapping):
            return float(self.shadow_sample.get(route, 1.0))
        return self.shadow_sample


def share(request_id: str, purpose: bytes) -> float:
    """A request's fixed place in [0, 1) for one purpose: the same in every process and on every retry."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, person=purpose).digest()
    return int.from_bytes(digest, "big") / 2**64


def in_canary(request_id: str, fraction: float) -> bool:
    return fraction > 0 and share(request_id, b"canary") < fraction


def in_shadow_sample(request_id: str, sample: float) -> bool:
    return sample >= 1 or share(request_id, b"shadow") < sample
