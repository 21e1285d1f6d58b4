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

import contextlib
import json
import os
import pickle
import re
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.fs
from ray import tune

from tuner.core.errors import UsageError
from tuner.core.internals import state_folders
from tuner.tracking.files import SNAPSHOTS

_CHECKPOINT = re.compile(r"checkpoint_\d+")  # Tune's name for a trial's checkpoint folder
_PICKLE_PROTOCOL = pickle.PROTO  # the first byte of every pickle of protocol 2 or later
# The staging folder also holds a folder per trial: listing it at every step of Tune's loop
# would cost more with every trial. Its files are listed at every step only until Tune's first
# save, then this often (Tune saves its state every 10 s at most), and stat'ed by name between.
LIST_EVERY_S = 10.0


class _StagedFiles:
    """The files in Tune's staging folder (its state), listed now and then (LIST_EVERY_S)."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.files: list[Path] = []
        self.listed = -LIST_EVERY_S

    def of(self, folder: Path, *, fresh: bool = False) -> list[Path]:
        """The files in ``folder``; ``fresh``: listed now."""
        saved = any(path.name.startswith("experiment_state") for path in self.files)
        stale = time.monotonic() - self.listed >= LIST_EVERY_S
        if fresh or stale or folder != self.folder or not saved:
            with os.scandir(folder) as entries:  # the entries' types: no stat per trial folder
                self.files = [Path(e.path) for e in entries if e.is_file(follow_symlinks=False)]
            self.folder, self.listed = folder, time.monotonic()
        return self.files


_STAGED = _StagedFiles()  # one driver runs one search at a time


class StateSnapshots(tune.Callback):
    """Copies Tune's staged state files to ``<experiment>/SNAPSHOTS`` after each loop step and
    after the loop."""

    def __init__(self) -> None:
        self._copied: dict[str, int] = {}  # file name -> mtime (ns) of the copy made

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._copy_changed(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Tune's last save, when its loop ends (copied to storage before this is called): a
        # driver killed in the closing phase resumes from it, straight to the closing phase.
        self._copy_changed(trials, fresh=True)

    def _copy_changed(self, trials: list, *, fresh: bool = False) -> None:
        if not trials:
            return
        folders = state_folders(trials[0])
        if not folders.local:
            return  # an object store replaces a whole object or nothing
        target = Path(folders.experiment, SNAPSHOTS)
        for path in _STAGED.of(folders.staging, fresh=fresh):
            try:
                mtime = path.stat().st_mtime_ns
            except FileNotFoundError:  # replaced since it was listed
                continue
            if self._copied.get(path.name) != mtime:
                _copy_atomically(path, target / path.name)
                self._copied[path.name] = mtime


class CheckpointRetention(tune.Callback):
    """Deletes a trial's old checkpoints, but only those no saved state of Tune can still name.

    Tune's own ``num_to_keep`` deletes a checkpoint as soon as newer ones replace it, while its
    saved state (written every 10 s or more) may still name it: a driver killed then resumed
    trials from deleted checkpoints. Saving Tune's state at every step of its loop instead takes
    the driver's CPU from the trials. So Tune keeps every checkpoint, and
    this deletes: a checkpoint reported since Tune's last save as soon as a newer one replaces it
    (no save named it, and the next names the trial's latest), so between saves a trial keeps at
    most three (a fast epoch on a GPU does not pile them up); after each save, those that were
    there at the save before it and that neither save names (the storage's copy of Tune's state
    is one of the two, its copy a moment behind); once the search has finished, and Tune's last
    save named each trial's latest checkpoint, all but that one. By what was reported, there and
    named, never by number, so it does not rest on how Tune numbers a trial's checkpoints (across
    failures, retries and resumes)."""

    def __init__(self) -> None:
        self._saved = 0  # mtime (ns) of Tune's staged state at the last save seen
        # trial id -> (the checkpoint the last save named, the checkpoints there then)
        self._last: dict[str, tuple[str, set[str]]] = {}
        # trial id -> the checkpoint it reported since the last save (Tune saves its state at the
        # end of a loop step, after the step's checkpoints are reported, before on_step_end)
        self._unsaved: dict[str, Any] = {}
        # Finished trials two saves have named the same checkpoint of: their folders change no
        # more, so a save need not list them (a search of thousands of trials would list every
        # trial's folder at every save); on_experiment_end still keeps only each one's latest.
        self._settled: set[str] = set()

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        replaced = self._unsaved.get(trial.trial_id)
        if replaced is not None:
            _delete_folder(replaced.filesystem, replaced.path)
        self._unsaved[trial.trial_id] = checkpoint

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not trials or _last_save(trials) == self._saved:
            return
        self._saved = _last_save(trials)
        self._unsaved.clear()
        for trial in trials:
            if trial.checkpoint is None or trial.trial_id in self._settled:
                continue
            named = Path(trial.checkpoint.path).name
            if trial.trial_id in self._last:  # the first save seen (a resume's too) deletes none
                named_before, there_before = self._last[trial.trial_id]
                _delete(trial, there_before - {named_before, named})
                if trial.is_finished() and named == named_before:
                    self._settled.add(trial.trial_id)
            self._last[trial.trial_id] = (named, _checkpoints(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Tune saves once more when its loop ends (not when an error stopped it), naming each
        # finished trial's latest checkpoint.
        finished = trials and all(trial.is_finished() for trial in trials)
        if not finished or _last_save(trials) == self._saved:
            return
        for trial in trials:
            if trial.checkpoint is not None:
                _delete(trial, _checkpoints(trial) - {Path(trial.checkpoint.path).name})


def _last_save(trials: list) -> int:
    """When Tune last saved its state (mtime, ns, of its staged file; 0: never)."""
    files = _STAGED.of(state_folders(trials[0]).staging)
    return max(
        (_mtime(path) for path in files if path.name.startswith("experiment_state")), default=0
    )


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _checkpoints(trial: Any) -> set[str]:
    """The names of the trial's checkpoint folders (``checkpoint_000012``)."""
    folder = str(PurePosixPath(trial.checkpoint.path).parent)
    entries = trial.checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(folder))
    return {
        entry.base_name
        for entry in entries
        if entry.type == pyarrow.fs.FileType.Directory and _CHECKPOINT.fullmatch(entry.base_name)
    }


def _delete(trial: Any, names: set[str]) -> None:
    folder = PurePosixPath(trial.checkpoint.path).parent
    for name in names:
        _delete_folder(trial.checkpoint.filesystem, str(folder / name))


def _delete_folder(filesystem: pyarrow.fs.FileSystem, path: str) -> None:
    # Gone already where a save listed it in flight and on_checkpoint deleted it since.
    with contextlib.suppress(FileNotFoundError):
        filesystem.delete_dir(path)


def ever_saved(experiment_path: str) -> bool:
    """Whether Tune saved the search's state at least once (its trials, its searcher): not when
    the driver was killed as the search started. An object store's search counts as saved."""
    folder = Path(experiment_path)
    if not folder.is_dir():
        return "://" in experiment_path
    return any(folder.glob("experiment_state-*.json")) or any(
        folder.glob(f"{SNAPSHOTS}/experiment_state-*.json")
    )


def clear(experiment_path: str) -> None:
    """Empty the folder of a search Tune never saved, so it starts again there (Tune would mix
    what a first start left with the new one's state)."""
    for path in Path(experiment_path).iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def repair(experiment_path: str) -> list[str]:
    """Put back from the snapshots each of Tune's state files that does not load, or that Tune
    saved but had not copied to storage when the driver stopped; their names.

    A UsageError when one does not load and tuner holds no whole copy of it.
    """
    folder = Path(experiment_path)
    if not folder.is_dir():  # an object store's URI: nothing is ever cut short there
        return []
    repaired = []
    for snapshot in sorted((folder / SNAPSHOTS).glob("*")):
        if snapshot.is_file() and not (folder / snapshot.name).exists():
            _copy_atomically(snapshot, folder / snapshot.name)
            repaired.append(snapshot.name)
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
        # By content, not by name: Tune pickles its search wrappers' state into files named
        # `.json` (search_gen_state-*, basic-variant-state-*). Judged as JSON, those were always
        # "cut short" and put back from a snapshot older than Tune's other files.
        if data.startswith(_PICKLE_PROTOCOL):
            pickle.loads(data)
        else:
            json.loads(data)
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
