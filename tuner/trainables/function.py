"""The user's own training function as a trainable: ``trainable: "my_pkg.train:fit"``.

The function is plain Python, ``fit(config, data)`` (or ``fit(config)`` when it loads its own
data): ``config`` is the trial's sample of the spec's space plus ``epochs``, its epoch budget
(the space's ``epochs``, else ``scheduler.max_epochs``); ``data`` is the spec's data section
loaded and split (``data.Splits``). Once per epoch it calls ``tuner.report(metrics,
checkpoint=state)``; a trial that Tune resumes after a kill or retries after a failure gets
that state back from ``tuner.checkpoint()``. Beside it, its module's ``test(config, checkpoint,
data)`` returns the trained network, which tuner tests once on the test split and registers.

tuner keeps everything else (the space and its checks, Optuna and ASHA, MLflow, resume,
retries, the closing phase): a trial's results are ``TrialReport``s like the zoo's. What it
adds per trial is small: a seed, the thread count, the checkpoint saved with each report
(``torch.save`` of the state given), nothing per batch. docs/own-code.md is the user's guide.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import io
import math
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import ray
import torch
from ray import tune
from torch import nn

from data import DataSource, Splits
from models.options import OptionError, import_object
from tuner.core.selection import final_value
from tuner.spec import space as space_lang
from tuner.tracking.tags import Status
from tuner.trainables import Settings, Trainable, Validated
from tuner.trainables.checks import check_objectives
from tuner.trainables.deep import eval_batch, load_checkpoint, use_assigned_cpus
from tuner.trainables.node_data import splits_on_node
from tuner.trainables.trial_report import ONCE, TrialReport

if TYPE_CHECKING:
    from ray.tune import Result

    from tuner.trainables.metrics import Evaluation

TEST_HOOK = "test"  # the function in the training function's module that gives the test network
CHECKPOINT_FILE = "checkpoint.pt"  # a reported state, saved with torch.save


class Diverged(Exception):
    """The search metric came back NaN or infinite: the trial ends there, as the zoo's do."""


# ---------------------------------------------------------------------------------------------
# What the user's function calls (re-exported as tuner.report and tuner.checkpoint)
# ---------------------------------------------------------------------------------------------


class _Trial:
    """One run of the user's function: in a Tune trial (``in_tune``), or trained again by the
    closing phase (``final.retrain``, ``final.repeats``), which keeps its history and last state
    here instead."""

    def __init__(
        self, settings: Settings, epochs: int, restored: Any, *, in_tune: bool, node_id: str = ""
    ) -> None:
        self.settings, self.epochs, self.restored = settings, epochs, restored
        self.in_tune, self.node_id = in_tune, node_id
        self.started = time.perf_counter()
        self.history: list[float] = []  # the metric per epoch (closing-phase runs)
        self.saved: bytes | str | None = None  # the last state reported (closing-phase runs)

    def report(self, metrics: Mapping[str, Any], checkpoint: Any) -> None:
        metric, values = self.settings.metric, _numbers(metrics)
        if metric not in values:
            raise ValueError(
                f"tuner.report got no {metric!r} (the spec's metric); it got: "
                f"{', '.join(values) or 'nothing'}"
            )
        diverged = not math.isfinite(values[metric])
        if diverged:  # the worst value, so the searcher learns to avoid the config
            values[metric] = self.settings.worst
        if self.in_tune:
            self._to_tune(values, None if diverged else checkpoint, diverged)
        else:
            self.history.append(values[metric])
            if checkpoint is not None:
                self.saved = _state_bytes(checkpoint)
        if diverged:
            raise Diverged
        self.started = time.perf_counter()

    def _to_tune(self, values: dict[str, float], checkpoint: Any, diverged: bool) -> None:
        seconds = {"epoch_seconds": time.perf_counter() - self.started}
        ending = Status.DIVERGED if diverged else None
        fields = {"epochs": self.epochs, "ending": ending, "node_id": self.node_id}
        if checkpoint is None:
            tune.report(TrialReport(values, seconds=seconds, **fields).result())
            return
        with tempfile.TemporaryDirectory() as directory:
            saving = time.perf_counter()
            folder = _saved(checkpoint, Path(directory))
            seconds["checkpoint_seconds"] = time.perf_counter() - saving
            report = TrialReport(values, seconds=seconds, **fields)
            tune.report(report.result(), checkpoint=tune.Checkpoint.from_directory(folder))

    def last_state(self) -> Any:
        """The last state a closing-phase run reported, as ``tuner.checkpoint()`` gives it."""
        if isinstance(self.saved, bytes):
            return torch.load(io.BytesIO(self.saved), map_location="cpu", weights_only=True)
        return self.saved


TRIAL: list[_Trial] = []  # the run in progress in this process (one: a worker runs one trial)


def report(metrics: Mapping[str, float], *, checkpoint: Any = None) -> None:
    """Report one epoch's ``metrics`` (names to numbers: the spec's metric, a ``val_*`` one,
    among them; ``train_*`` and ``val_*`` ones are charted per epoch in MLflow) and, optionally,
    the state to continue from: a mapping (a ``state_dict``, or a dict of them with the epoch;
    tensors, numbers, strings, lists and dicts: it is read back with ``weights_only``) or a
    folder (copied to the search's storage). Call it once per epoch.

    Outside a search it does nothing, so the training script also runs on its own."""
    if TRIAL:
        TRIAL[-1].report(metrics, checkpoint)


def checkpoint() -> Any:
    """The state this trial last reported, when Tune resumes or retries it (a mapping as saved,
    or a folder's path); None when it starts afresh, or outside a search."""
    return TRIAL[-1].restored if TRIAL else None


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    try:
        return {str(key): float(value) for key, value in metrics.items()}
    except (TypeError, ValueError) as error:
        raise ValueError(f"tuner.report takes names to numbers: {error}") from None


def _saved(checkpoint: Any, directory: Path) -> Path:
    """The folder Tune copies to storage: the user's own, or ``directory`` with the state."""
    if isinstance(checkpoint, str | Path):
        return Path(checkpoint)
    torch.save(dict(checkpoint), directory / CHECKPOINT_FILE)
    return directory


def _state_bytes(checkpoint: Any) -> bytes | str:
    """A reported state as it is now (a state_dict's tensors change as training goes on)."""
    if isinstance(checkpoint, str | Path):
        return str(checkpoint)
    buffer = io.BytesIO()
    torch.save(dict(checkpoint), buffer)
    return buffer.getvalue()


def _restored(saved: tune.Checkpoint | None) -> Any:
    """What ``checkpoint()`` returns for a Tune checkpoint: the state saved, or its folder."""
    if saved is None:
        return None
    with saved.as_directory() as directory:
        path = Path(directory) / CHECKPOINT_FILE
        if path.is_file():
            return load_checkpoint(path)
    return saved.to_directory()


# ---------------------------------------------------------------------------------------------
# The user's functions
# ---------------------------------------------------------------------------------------------


@functools.cache
def training_function(path: str) -> tuple[Callable[..., Any], bool]:
    """The function at ``path`` and whether it takes the data (``fit(config, data)``); an
    OptionError (one line) when it is missing or takes something else."""
    fit = import_object(path)
    try:
        parameters = list(inspect.signature(fit).parameters.values())
    except (TypeError, ValueError):
        raise OptionError(f"{path!r} is a {type(fit).__name__}, not a function") from None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    required = [p for p in parameters if p.default is p.empty and p.kind not in variadic]
    if not 1 <= len(positional) <= 2 or len(required) > len(positional):
        raise OptionError(
            f"{path!r} takes ({', '.join(p.name for p in parameters)}); a training function "
            "takes (config, data), or (config) when it loads its own data"
        )
    return fit, len(positional) == 2


def test_hook(path: str) -> Callable[..., Any]:
    """The ``test(config, checkpoint, data)`` beside the training function at ``path``."""
    module = importlib.import_module(path.partition(":")[0])  # imported with the function
    hook = getattr(module, TEST_HOOK, None)
    if not callable(hook):
        where = f"{module.__name__} ({getattr(module, '__file__', '?')})"
        raise OptionError(
            f"{where} has no {TEST_HOOK}(config, checkpoint, data) beside "
            f"{path.partition(':')[2]}: tuner tests the best trial's network, which it returns "
            "(see docs/own-code.md)"
        )
    return cast(Callable[..., Any], hook)


def _run(path: str, config: Mapping[str, Any], splits: Splits, trial: _Trial) -> None:
    """Call the user's function for ``trial``, seeded; a diverged run ends quietly."""
    fit, takes_data = training_function(path)
    _seed(trial.settings.seed)
    TRIAL[:] = [trial]
    try:
        with contextlib.suppress(Diverged):  # a diverged run ends quietly
            fit({**config, "epochs": trial.epochs}, *([splits] if takes_data else []))
    finally:
        TRIAL.clear()


def _seed(seed: int) -> None:
    """Python's, NumPy's and torch's generators seeded with the search's seed (a function that
    seeds its own overrides this)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _test(path: str, config: Mapping[str, Any], state: Any, splits: Splits) -> Evaluation:
    """The network ``test`` returns for ``state``, classifying the test split once."""
    from tuner.trainables.metrics import Evaluation  # scikit-learn: ~1 s, the driver's only

    network = test_hook(path)(dict(config), state, splits)
    if not isinstance(network, nn.Module):
        raise TypeError(
            f"{path.partition(':')[0]}.{TEST_HOOK} returned a {type(network).__name__}; it "
            "returns the trained torch.nn.Module, taking float images 0..255 (N, C, H, W)"
        )
    network = network.cpu().eval()
    step = eval_batch(splits.test_x)
    with torch.no_grad():
        predicted = [
            network(splits.test_x[start : start + step].float()).argmax(1)
            for start in range(0, len(splits.test_y), step)
        ]
    return Evaluation(splits.test_y.numpy(), torch.cat(predicted).numpy(), splits.classes, network)


# ---------------------------------------------------------------------------------------------
# The Trainable protocol (tuner.trainables.Trainable), for the function at ``path``
# ---------------------------------------------------------------------------------------------


def check_space(
    path: str, tree: space_lang.Group, *, metric: str, objectives: Sequence[str] = ()
) -> None:
    """The function and its ``test`` import; the metric is a validation one (``val_*``: which
    ones the function reports is known only once it runs); a second objective is a model cost
    it reports. Any space keys: the config is the function's own."""
    try:
        training_function(path)
        test_hook(path)
    except OptionError as error:
        raise space_lang.SpaceError("trainable", str(error)) from None
    if not metric.startswith("val_"):
        raise space_lang.SpaceError(
            "metric",
            f"the search selects on a validation metric your function reports, named val_*; "
            f"got {metric!r}",
        )
    check_objectives(objectives, ONCE)


def epochs(config: Mapping[str, Any], *, max_epochs: int) -> int:
    """A trial's epochs: the config's own ``epochs``, else the search's budget."""
    return int(config.get("epochs", max_epochs))


def train(
    path: str, config: dict[str, Any], *, splits: Splits | DataSource, settings: Settings
) -> None:
    """The Ray Tune function trainable: the user's function, reporting through ``report``."""
    data = splits_on_node(splits)
    use_assigned_cpus()
    node_id = ray.get_runtime_context().get_node_id()
    budget = epochs(config, max_epochs=settings.max_epochs)
    restored = _restored(tune.get_checkpoint())
    _run(path, config, data, _Trial(settings, budget, restored, in_tune=True, node_id=node_id))


def evaluate_test(path: str, result: Result, *, splits: Splits, settings: Settings) -> Evaluation:
    """The best trial's last reported state, tested through the module's ``test``."""
    config = {**result.config, "epochs": epochs(result.config, max_epochs=settings.max_epochs)}
    return _test(path, config, _restored(result.checkpoint), splits)


def _again(path: str, config: Mapping[str, Any], splits: Splits, settings: Settings) -> _Trial:
    """``config`` trained again outside Tune, its history and last state kept."""
    use_assigned_cpus()
    trial = _Trial(settings, epochs(config, max_epochs=settings.max_epochs), None, in_tune=False)
    _run(path, config, splits, trial)
    return trial


def retrain_and_test(
    path: str, config: Mapping[str, Any], *, splits: Splits, settings: Settings
) -> Evaluation:
    """``final.retrain``: trained again on train+val, its last state tested once."""
    trial = _again(path, config, splits.with_val_in_train(), settings)
    return _test(path, {**config, "epochs": trial.epochs}, trial.last_state(), splits)


def validate(
    path: str, config: Mapping[str, Any], *, splits: Splits, settings: Settings
) -> Validated:
    """``final.repeats``: trained again with ``settings.seed``; its final validation value and
    last state."""
    trial = _again(path, config, splits, settings)
    value = final_value(trial.history) if trial.history else math.nan
    return Validated(settings.worst if math.isnan(value) else value, trial.last_state())


def test_validated(
    path: str,
    config: Mapping[str, Any],
    validated: Validated,
    *,
    splits: Splits,
    settings: Settings,
) -> Evaluation:
    """The state ``validate`` kept, tested once."""
    budget = epochs(config, max_epochs=settings.max_epochs)
    return _test(path, {**config, "epochs": budget}, validated.model, splits)


def bind(path: str) -> Trainable:
    """The Trainable of the function at ``path``: these functions with ``path`` bound, as plain
    functions (Ray's ``remote`` takes no partials), each pickled with the path."""

    def bound(function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return function(path, *args, **kwargs)

        # Named as the function, with its signature less ``path`` (what Tune inspects).
        call.__name__, call.__qualname__, call.__doc__ = (function.__name__,) * 2 + (
            function.__doc__,
        )
        signature = inspect.signature(function)
        call.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=list(signature.parameters.values())[1:]
        )
        return call

    functions = (check_space, train, evaluate_test, retrain_and_test, validate, test_validated)
    trainable = {function.__name__: bound(function) for function in functions}
    return cast(Trainable, SimpleNamespace(epochs=epochs, **trainable))
