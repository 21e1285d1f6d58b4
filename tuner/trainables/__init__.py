"""The kinds of trial a spec can run (`trainable:`).

Each kind is a module with the same names: ``check_space(tree, spec)`` (validation at load
time), ``train(config, splits, settings)`` (the Ray Tune function trainable; ``splits`` is the
data in memory, or a ``data.DataSource`` that ``node_data.splits_on_node`` reads on the node),
``evaluate_test(result, splits, settings)`` (the best trial on the test split) and
``retrain_and_test(config, splits, settings)`` (the best config trained again on train+val,
then tested). Modules are imported on demand: torch and OpenCV are slow to
import and `tuner --help` needs neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType

# The key of a trial's result that lists what it warned of since its last report (an
# unreadable checkpoint, ...): the driver records and prints them (recorder, progress).
WARNINGS = "warnings"

TRAINABLES = {
    "deep": "tuner.trainables.deep",
    "classical": "tuner.trainables.classical",
}


@dataclass(frozen=True)
class Settings:
    """What a trial needs besides its config; sent through Ray's object store with the data."""

    max_epochs: int  # the epoch budget when the config sets no `epochs`
    seed: int
    metric: str  # what the search selects on, e.g. val_acc
    mode: str  # max or min
    cache_dir: str | None = None  # the node-local feature cache of the classical trainable
    max_params: int | None = None  # spec.constraints: bigger models are rejected untrained
    max_model_mb: float | None = None
    progress_bars: bool = False  # trials draw bars on the driver's terminal (Ray's tqdm_ray)

    @property
    def worst(self) -> float:
        """The metric's worst value: what a rejected or diverged trial reports."""
        return 0.0 if self.mode == "max" else math.inf

    def better(self, value: float, than: float | None) -> bool:
        """Whether ``value`` of the metric beats ``than`` (None: nothing to beat yet)."""
        if than is None:
            return True
        return value > than if self.mode == "max" else value < than


def trainable_module(kind: str) -> ModuleType:
    """The module implementing trainable ``kind`` (a name the spec schema already checked)."""
    return import_module(TRAINABLES[kind])
