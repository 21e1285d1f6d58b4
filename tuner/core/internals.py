"""The private parts of Ray Tune, Optuna and MLflow that tuner relies on, each behind one function.

A minor release may move any of them: pyproject.toml bounds the versions tuner was tested on,
and tests/tuner/test_internals.py checks every function here against the installed versions;
a part that moved fails there (and here, at run time) with a message naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `tuner predict` reads none of these libraries
    import optuna


class MovedInternal(RuntimeError):
    """A private part of a library tuner relies on is not where this version of tuner expects."""


def _private(owner: Any, name: str) -> Any:
    try:
        return getattr(owner, name)
    except AttributeError:
        kind = type(owner)
        where = owner.__name__ if isinstance(owner, ModuleType) else kind.__module__
        where += "" if isinstance(owner, ModuleType) else f".{kind.__qualname__}"
        raise MovedInternal(
            f"{where}.{name} is gone in the installed version: tuner/internals.py must follow "
            "it (pyproject.toml bounds the versions tuner was tested on; constraints.txt pins "
            "them)"
        ) from None


# Ray Tune's searchers -------------------------------------------------------------------------


def generator_running(generator: Any) -> set[str]:
    """The trial ids Tune's BasicVariantGenerator counts as running (a mutable set)."""
    return _private(generator, "_live_trials")


def limiter_running(limiter: Any) -> set[str]:
    """The trial ids Tune's ConcurrencyLimiter counts as running (a mutable set)."""
    return _private(limiter, "live_trials")


def optuna_study(searcher: Any) -> optuna.Study:
    """The study Tune's OptunaSearch asks and tells."""
    return _private(searcher, "_ot_study")


def optuna_trial_numbers(searcher: Any) -> dict[str, int]:
    """Tune trial id -> the number of the Optuna trial Tune's OptunaSearch asked for it."""
    return {trial_id: trial.number for trial_id, trial in _private(searcher, "_ot_trials").items()}


# Ray Tune's storage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StateFolders:
    """Where Tune writes a search's state: ``staging`` on the driver, copied to ``experiment``
    (on a local disk when ``local``; else an object store's path)."""

    staging: Path
    experiment: str
    local: bool


def state_folders(trial: Any) -> StateFolders:
    """The state folders of the search a Tune trial belongs to (Tune's StorageContext)."""
    import pyarrow.fs

    storage = _private(trial, "storage")
    filesystem = _private(storage, "storage_filesystem")
    return StateFolders(
        staging=Path(_private(storage, "experiment_driver_staging_path")),
        experiment=_private(storage, "experiment_fs_path"),
        local=isinstance(filesystem, pyarrow.fs.LocalFileSystem),
    )


# Optuna ---------------------------------------------------------------------------------------


def distribution_holds(distribution: optuna.distributions.BaseDistribution, value: Any) -> bool:
    """Whether ``value`` (as a trial's param holds it) lies inside ``distribution``."""
    try:
        internal = distribution.to_internal_repr(value)
    except ValueError:  # a choice it does not have
        return False
    return _private(distribution, "_contains")(internal)


# MLflow ---------------------------------------------------------------------------------------


def fluent_store_uris() -> tuple[str | None, str | None]:
    """The tracking and registry URIs MLflow's fluent API was pointed at (None: never set),
    read without MLflow's getters, which fall back to a default."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return _private(tracking_utils, "_tracking_uri"), _private(registry_utils, "_registry_uri")
