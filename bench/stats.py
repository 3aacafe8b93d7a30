"""The benchmark's one statistic for every ratio it reports: the median of the per-round ratios.

The machine's speed drifts (a shared host), so the rows a ratio compares run in rounds, back to
back within each round. For each round r the ratio is a[r] / b[r]; the report gives the median
over the rounds (never the best round, never a ratio between two medians, whose rounds can
differ). A figure with a single value on both sides is one measurement, and says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Ratio:
    value: float  # the median of the per-round ratios
    rounds: tuple[float, ...]  # each round's ratio, in round order

    @property
    def single(self) -> bool:
        """One measurement: one value on each side, no rounds to take a median over."""
        return len(self.rounds) == 1

    def listed(self) -> str:
        """Every round's ratio, lowest first, as the report prints them."""
        return ", ".join(f"{x:.2f}" for x in sorted(self.rounds))


def median_of_ratios(a: Sequence[float], b: Sequence[float]) -> Ratio:
    """For each round r, a[r] / b[r]; their median. A side measured once (a single value) stands
    against every round of the other (a row run once against a row run in rounds)."""
    a, b = list(a), list(b)
    if len(a) == 1 and len(b) > 1:
        a = a * len(b)
    if len(b) == 1 and len(a) > 1:
        b = b * len(a)
    if not a or len(a) != len(b):
        raise ValueError(f"cannot pair {len(a)} round(s) with {len(b)}")
    per_round = tuple(x / y for x, y in zip(a, b, strict=True))
    return Ratio(statistics.median(per_round), per_round)
