"""What a search optimizes: a metric and whether larger or smaller is better, the one place a
mode is read. Every stage asks it rather than comparing the mode itself: the Optuna study's
direction, the order trials are ranked in, the best of some values, the running best.

Plain Python: `tuner best` reads this without torch or Ray.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

Mode = Literal["max", "min"]
MODES: tuple[Mode, ...] = ("max", "min")

T = TypeVar("T")


@dataclass(frozen=True)
class Objective:
    """A metric and its mode (``max``: larger is better, ``min``: smaller)."""

    metric: str
    mode: Mode = "max"

    def __post_init__(self) -> None:
        # A mode read back from a tag or a YAML file is a plain string: a typo would otherwise
        # silently minimise a metric that should be maximised.
        if self.mode not in MODES:
            raise ValueError(f"the mode of {self.metric} is max or min, not {self.mode!r}")

    @property
    def maximize(self) -> bool:
        return self.mode == "max"

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """The study direction Optuna is told."""
        return "maximize" if self.maximize else "minimize"

    def signed(self, value: float) -> float:
        """``value`` such that larger is better (what Tune's schedulers, ASHA among them, do
        internally with the mode they are given; the Pareto front compares these)."""
        return value if self.maximize else -value

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` strictly beats ``b`` (a tie is not better; NaN beats nothing)."""
        return a > b if self.maximize else a < b

    def best(self, values: Iterable[T], key: Callable[[T], float] | None = None) -> T:
        """The best of ``values`` (by ``key``), the first of tied ones; as the builtin max or
        min, so a ValueError when there are none."""
        return (max if self.maximize else min)(values, key=key)  # type: ignore[type-var]

    def rank_key(self, value: float | None) -> tuple[bool, float]:
        """Sorts values best first, none or non-finite (nan, a diverged trial's inf) last, all
        of those tied; ties are the caller's to break."""
        if value is None or not math.isfinite(value):
            return True, 0.0
        return False, -self.signed(value)
