"""How the best trial is chosen, and how sure that choice is: the one place both are written.

A trial is ranked by its *final value*: the mean of the search metric over its last
``LAST_EPOCHS`` epochs (fewer when it trained fewer: ASHA stopped it, or a classical trial
reports once), not its best epoch. On a small validation split one epoch's lucky spike (digits'
288 images: 1.0000 against 0.9931 is two images) would otherwise choose the winner, and the
test evaluates the weights the value describes: the trial's last epoch's (bench_selection.py,
docs/search.md "Choosing the best trial"). The driver ranks Tune's histories with it
(tuner.commands.run), the recorder logs it per trial as ``final_<metric>``
(tuner.search.recorder), every reader ranks by that (tuner.tracking.records) in the order
``Objective.rank_key`` gives, and ``final.repeats`` re-ranks seeds by it (the trainables'
``validate``).

Plain Python: `tuner best` reads this without torch or Ray.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LAST_EPOCHS = 2  # epochs averaged: bench/bench_selection.py (docs/benchmarks.md has its table)
Z95 = 1.959964  # the normal quantile of a two-sided 95% interval
# A validation split below this many images leaves top trials within its noise so often that
# an unset final.repeats re-trains the tied ones (README, "Choosing the best trial"): at 1000,
# a 95% interval on an accuracy of 0.95 is ±0.014 wide, so trials that differ by less are a coin
# toss; digits (288 validation images) and the Fashion-MNIST bench subset (600) are below it.
SMALL_VAL_IMAGES = 1000
AUTO_REPEATS = 3  # seeds per tied config when final.repeats is unset on a small split
AUTO_TOP_K = 3  # at most this many tied configs are trained again


def final_key(metric: str) -> str:
    """The MLflow metric holding a trial's final value of ``metric``."""
    return f"final_{metric}"


def with_latest(recent: Sequence[float], value: float) -> list[float]:
    """A trial's last LAST_EPOCHS values (what ``final_value`` reads) once ``value``, its
    newest, is added: what the Tune callbacks keep per trial."""
    return [*recent, value][-LAST_EPOCHS:]


def final_value(history: Sequence[float]) -> float:
    """The mean of the last LAST_EPOCHS values of a trial's metric, in epoch order; nan when it
    has none. A diverged last epoch's inf stays in: its weights are what the test would get,
    so the trial ranks last (Objective.rank_key)."""
    last = history[-LAST_EPOCHS:]
    return math.fsum(last) / len(last) if len(last) else math.nan


def is_accuracy(metric: str) -> bool:
    """Whether ``metric`` is a share of images right (val_acc): a binomial count, whose noise
    on a split of known size ``interval`` gives. Losses and F1 have no such interval here."""
    return metric.endswith("_acc")


def interval(value: float, images: int) -> tuple[float, float]:
    """Wilson's 95% interval of an accuracy ``value`` measured on ``images`` images (sound at
    1.0, where the normal approximation's width is 0): accuracies inside it are not told apart
    from ``value`` by the split. On 288 images, 1.0000's is 0.9868..1.0000."""
    z2 = Z95 * Z95
    centre = (value + z2 / (2 * images)) / (1 + z2 / images)
    half = Z95 * math.sqrt(value * (1 - value) / images + z2 / (4 * images**2)) / (1 + z2 / images)
    return max(0.0, centre - half), min(1.0, centre + half)


def tied(values: Sequence[float], images: int) -> int:
    """How many of ``values`` (final values of an accuracy, best first) fall inside the first
    one's 95% interval on ``images`` validation images: 1 when the best clearly wins."""
    if not values or not math.isfinite(values[0]):
        return 1
    low, high = interval(values[0], images)
    # The first counts itself (at 1.0 on a large split, rounding leaves it a hair outside).
    return 1 + sum(1 for value in values[1:] if math.isfinite(value) and low <= value <= high)
