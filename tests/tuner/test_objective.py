"""The one reading of a search's mode (tuner.core.objective): which value is better, the best
of several, the order trials rank in (non-finite values last) and Optuna's direction."""

from __future__ import annotations

import math

import pytest

from tuner.core.objective import Objective

ACC = Objective("val_acc", "max")
LOSS = Objective("val_loss", "min")


def test_max_prefers_larger_values():
    assert ACC.maximize and ACC.direction == "maximize"
    assert ACC.better(0.9, 0.8) and not ACC.better(0.8, 0.9)
    assert ACC.best([0.8, 0.95, 0.9]) == 0.95
    assert ACC.signed(0.9) == 0.9


def test_min_prefers_smaller_values():
    assert not LOSS.maximize and LOSS.direction == "minimize"
    assert LOSS.better(0.2, 0.3) and not LOSS.better(0.3, 0.2)
    assert LOSS.best([0.3, 0.1, 0.2]) == 0.1
    assert LOSS.signed(0.2) == -0.2  # larger is better, as Tune's schedulers compare


@pytest.mark.parametrize("objective", [ACC, LOSS])
def test_a_tie_is_not_better_and_the_first_tied_is_best(objective):
    assert not objective.better(0.5, 0.5)
    trials = [("a", 0.5), ("b", 0.5)]
    assert objective.best(trials, key=lambda trial: trial[1]) == ("a", 0.5)


@pytest.mark.parametrize("objective", [ACC, LOSS])
def test_nan_beats_nothing(objective):
    assert not objective.better(math.nan, 0.5)
    assert not objective.better(0.5, math.nan)


@pytest.mark.parametrize(
    ("objective", "order"),
    [(ACC, [0.9, 0.8, 0.1]), (LOSS, [0.1, 0.8, 0.9])],
)
def test_ranks_best_first_with_non_finite_values_last(objective, order):
    values = [None, 0.8, math.inf, 0.1, math.nan, 0.9, -math.inf]
    ranked = sorted(values, key=objective.rank_key)
    assert ranked[:3] == order
    # None, nan and both infinities (a diverged trial's) all tie last, in their given order.
    assert ranked[3] is None and ranked[4] == math.inf and math.isnan(ranked[5])
    assert ranked[6] == -math.inf


def test_rank_key_leaves_ties_to_the_caller():
    assert ACC.rank_key(0.5) == ACC.rank_key(0.5)
    assert ACC.rank_key(None) == ACC.rank_key(math.nan) == ACC.rank_key(math.inf)


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="max or min"):
        Objective("val_acc", "maximum")  # type: ignore[arg-type]


def test_best_of_nothing_fails_as_max_does():
    with pytest.raises(ValueError):
        ACC.best([])
