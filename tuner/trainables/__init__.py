"""The kinds of trial a spec can run (`trainable:`): modules that each implement ``Trainable``,
and the user's own training function (``"my_pkg.train:fit"``), which ``function`` makes one.

Modules are imported on demand: torch and OpenCV are slow to import and `tuner --help` needs
neither.

May import: ``tuner.core``, ``tuner.spec``'s space language, and ``tuner.tracking.tags`` for the
``Status`` a trial ends with (that module imports MLflow only for type hints).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol, cast

from tuner.core.objective import Mode, Objective

if TYPE_CHECKING:
    from ray.tune import Result

    from data import DataSource, Splits
    from tuner.spec.space import Group
    from tuner.trainables.metrics import Evaluation

TRAINABLES = {
    "deep": "tuner.trainables.deep",
    "classical": "tuner.trainables.classical",
}
# Any other `trainable:` is an import path: the user's own function, run by this module.
FUNCTION = "tuner.trainables.function"


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
    def objective(self) -> Objective:
        return Objective(self.metric, cast(Mode, self.mode))

    @property
    def worst(self) -> float:
        """The metric's worst value: what a rejected or diverged trial reports (a maximised
        metric is a score in [0, 1], a minimised one a loss)."""
        return 0.0 if self.objective.maximize else math.inf

    def better(self, value: float, than: float | None) -> bool:
        """Whether ``value`` of the metric beats ``than`` (None: nothing to beat yet)."""
        return than is None or self.objective.better(value, than)


@dataclass(frozen=True)
class Validated:
    """A config trained once outside Tune (``final.repeats``), as a trial trains it."""

    value: float  # its final value of the search metric on the validation split (selection)
    model: Any  # what made it, for the test: deep, its last epoch's weights; classical, the fit


class Trainable(Protocol):
    """What a kind of trial provides: a module with these functions (as Optuna's samplers
    implement one interface, keyword arguments after the first)."""

    def check_space(self, tree: Group, *, metric: str, objectives: Sequence[str] = ()) -> None:
        """At load time, before Ray starts: refuse the keys, names and values of the spec's
        space ``tree`` this trainable would not read, a ``metric`` it does not report on
        the validation split, and ``objectives`` after the first that are not costs it
        reports (checks.check_objectives)."""

    def epochs(self, config: Mapping[str, Any], *, max_epochs: int) -> int:
        """The results a trial of ``config`` reports at most (one per epoch), the search's
        budget being ``max_epochs``: what its progress line counts on."""

    def train(
        self, config: dict[str, Any], *, splits: Splits | DataSource, settings: Settings
    ) -> None:
        """The Ray Tune function trainable: train ``config``, reporting a ``TrialReport`` per
        epoch. ``splits``: the data in memory, or a ``DataSource`` read on the node."""

    def evaluate_test(self, result: Result, *, splits: Splits, settings: Settings) -> Evaluation:
        """The best trial as it ended (its last epoch), evaluated once on the test split."""

    def retrain_and_test(
        self, config: Mapping[str, Any], *, splits: Splits, settings: Settings
    ) -> Evaluation:
        """``final.retrain``: ``config`` trained again on train+val, then tested once."""

    def validate(
        self, config: Mapping[str, Any], *, splits: Splits, settings: Settings
    ) -> Validated:
        """``final.repeats``: ``config`` trained again on the train split with
        ``settings.seed``, as a trial is, and scored on the validation split; not tested."""

    def test_validated(
        self, config: Mapping[str, Any], validated: Validated, *, splits: Splits, settings: Settings
    ) -> Evaluation:
        """The model ``validate`` kept for ``config``, evaluated once on the test split."""


# The functions of the Trainable protocol, in its order.
PROTOCOL = (
    "check_space",
    "epochs",
    "train",
    "evaluate_test",
    "retrain_and_test",
    "validate",
    "test_validated",
)


def trainable_module(kind: str, *, code_path: Sequence[str] = ()) -> Trainable:
    """The module implementing trainable ``kind`` (a name the spec schema already checked); for
    an import path, the function trainable of that function. With ``code_path`` (the folders
    the spec's own code is imported from), each of its functions first puts them on the
    ``sys.path`` of the process it runs in: a trial's worker imports the user's code too."""
    if kind in TRAINABLES:
        trainable = cast(Trainable, import_module(TRAINABLES[kind]))
    else:
        trainable = import_module(FUNCTION).bind(kind)
    return on_code_path(trainable, tuple(code_path)) if code_path else trainable


def on_code_path(trainable: Trainable, code_path: tuple[str, ...]) -> Trainable:
    """``trainable`` whose every function first imports the user's code from ``code_path`` too.

    Plain functions (closures), as Ray's ``remote`` and Tune's ``with_parameters`` take: they
    travel to each worker with the folders. A folder is the driver's: a worker on this machine
    or on a disk every node shares finds it (docs/own-code.md says what runs where)."""
    from models.options import use_code_path  # `models` imports torch: not at `tuner --help`

    def on_path(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            use_code_path(code_path)
            return function(*args, **kwargs)

        return call

    functions = {name: on_path(getattr(trainable, name)) for name in PROTOCOL}
    return cast(Trainable, SimpleNamespace(**functions))
