"""Ray Tune's saved search state, kept whole and usable for a resume however the driver stopped.

Tune writes its state (``experiment_state-*.json``, the searcher's, ``tuner.pkl``) into a staging
folder, then a background thread copies it into the storage folder file by file, in place. A
driver killed during that copy leaves a file cut short, and Tune's restore then silently starts
a new, empty search instead. So after each step of Tune's loop, when the staged files are whole,
tuner copies the ones that changed into ``SNAPSHOTS`` beside Tune's, each by an atomic rename;
before a resume, :func:`repair` puts back any of Tune's files that no longer load. And the
checkpoints that state names must still exist: :class:`CheckpointRetention` deletes old ones.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.fs
from ray import tune

from tuner.errors import UsageError

SNAPSHOTS = ".tuner-state"
_CHECKPOINT = re.compile(r"checkpoint_\d+")  # Tune's name for a trial's checkpoint folder


class StateSnapshots(tune.Callback):
    """Copies Tune's staged state files to ``<experiment>/SNAPSHOTS`` after each loop step."""

    def __init__(self) -> None:
        self._copied: dict[str, int] = {}  # file name -> mtime (ns) of the copy made

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not trials:
            return
        storage = trials[0].storage
        if not _is_local(storage.storage_filesystem):
            return  # an object store replaces a whole object or nothing
        staging = Path(storage.experiment_driver_staging_path)
        target = Path(storage.experiment_fs_path, SNAPSHOTS)
        for path in staging.iterdir():
            if not path.is_file():
                continue
            mtime = path.stat().st_mtime_ns
            if self._copied.get(path.name) != mtime:
                _copy_atomically(path, target / path.name)
                self._copied[path.name] = mtime


class CheckpointRetention(tune.Callback):
    """Deletes a trial's old checkpoints, but only those no saved state of Tune can still name.

    Tune's own ``num_to_keep`` deletes a checkpoint as soon as newer ones replace it, while its
    saved state (written every 10 s or more) may still name it: a driver killed then resumed
    trials from deleted checkpoints. Saving Tune's state at every step of its loop instead took
    the driver's CPU from the trials (README, "Measured"). So Tune keeps every checkpoint and,
    after each save, this deletes those older than what the save before it named (the storage's
    copy of Tune's state is that one or this one, its copy a moment behind); once the search has
    finished, and Tune's last save named each trial's latest checkpoint, all but that one."""

    def __init__(self) -> None:
        self._saved = 0  # mtime (ns) of Tune's staged state at the last save seen
        self._named: dict[str, list[str]] = {}  # trial id -> what the last two saves named

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not trials or _last_save(trials) == self._saved:
            return
        self._saved = _last_save(trials)
        for trial in trials:
            if trial.checkpoint is not None:
                named = self._named.setdefault(trial.trial_id, [])
                named[:] = [*named, Path(trial.checkpoint.path).name][-2:]
                if len(named) == 2:  # the first save seen (a resume's too) deletes nothing
                    _delete_checkpoints_before(trial, named[0])

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Tune saves once more when its loop ends (not when an error stopped it), naming each
        # finished trial's latest checkpoint.
        finished = trials and all(trial.is_finished() for trial in trials)
        if not finished or _last_save(trials) == self._saved:
            return
        for trial in trials:
            if trial.checkpoint is not None:
                _delete_checkpoints_before(trial, Path(trial.checkpoint.path).name)


def _last_save(trials: list) -> int:
    """When Tune last saved its state (mtime, ns, of its staged file; 0: never)."""
    staging = Path(trials[0].storage.experiment_driver_staging_path)
    return max((path.stat().st_mtime_ns for path in staging.glob("experiment_state*")), default=0)


def _delete_checkpoints_before(trial: Any, name: str) -> None:
    """Delete the trial's checkpoint folders older than ``name`` (``checkpoint_000012``)."""
    filesystem = trial.checkpoint.filesystem
    folder = str(PurePosixPath(trial.checkpoint.path).parent)
    for entry in filesystem.get_file_info(pyarrow.fs.FileSelector(folder)):
        # Tune numbers them with zero padding, so names sort as the checkpoints were made.
        older = _CHECKPOINT.fullmatch(entry.base_name) and entry.base_name < name
        if older and entry.type == pyarrow.fs.FileType.Directory:
            filesystem.delete_dir(entry.path)


def repair(experiment_path: str) -> list[str]:
    """Put back from the snapshots each of Tune's state files that does not load; their names.

    A UsageError when one does not load and tuner holds no whole copy of it.
    """
    folder = Path(experiment_path)
    if not folder.is_dir():  # an object store's URI: nothing is ever cut short there
        return []
    repaired = []
    for path in sorted(folder.glob("*.json")) + sorted(folder.glob("*.pkl")):
        if _loads(path):
            continue
        snapshot = folder / SNAPSHOTS / path.name
        if not snapshot.is_file():
            raise UsageError(
                f"cannot resume: {path} was cut short when the search was stopped, before tuner "
                "kept a whole copy of it; start the search again without resume"
            )
        _copy_atomically(snapshot, path)
        repaired.append(path.name)
    return repaired


def _loads(path: Path) -> bool:
    data = path.read_bytes()
    try:
        if path.suffix == ".json":
            json.loads(data)
        else:
            pickle.loads(data)
    # Anything that stops it loading here stops Tune's restore too (a cut-short pickle raises
    # EOFError, UnpicklingError, or whatever the half-built object throws).
    except Exception:
        return False
    return True


def _copy_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)  # readers see the old file or the new one, never half of one


def _is_local(filesystem: Any) -> bool:
    return isinstance(filesystem, pyarrow.fs.LocalFileSystem)
