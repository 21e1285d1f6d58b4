"""Ray Tune's saved search state, kept whole for a resume however the driver was stopped.

Tune writes its state (``experiment_state-*.json``, the searcher's, ``tuner.pkl``) into a staging
folder, then a background thread copies it into the storage folder file by file, in place. A
driver killed during that copy leaves a file cut short, and Tune's restore then silently starts
a new, empty search instead. So after each step of Tune's loop, when the staged files are whole,
tuner copies the ones that changed into ``SNAPSHOTS`` beside Tune's, each by an atomic rename;
before a resume, :func:`repair` puts back any of Tune's files that no longer load.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune

from tuner.errors import UsageError

SNAPSHOTS = ".tuner-state"


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
