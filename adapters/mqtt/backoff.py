"""Capped exponential backoff with full jitter (AWS architecture blog's "full jitter").

Delay n is uniform in [0, min(cap, base * 2**n)], never below `floor`, so a fleet of
relays that lost the same broker does not reconnect in lock step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.2
    cap: float = 10.0
    floor: float = 0.05
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap):
            raise ValueError(f"backoff needs 0 < base <= cap, got base={self.base} cap={self.cap}")
        self.floor = min(self.floor, self.cap)

    def next_delay(self) -> float:
        """The delay before the next try; each call widens the window up to `cap`."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return max(self.floor, self.rng.uniform(0.0, ceiling))

    def reset(self) -> None:
        self.attempt = 0
