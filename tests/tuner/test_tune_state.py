"""Tune's state files cut short by a kill are put back from tuner's whole copies before a resume."""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path

import pytest
from ray import tune

from tuner.core.errors import UsageError
from tuner.search.tune_state import CheckpointRetention, repair
from tuner.tracking.files import SNAPSHOTS

STATE = "experiment_state-2026-01-01_00-00-00.json"
SEARCHER = "searcher-state-2026-01-01_00-00-00.pkl"
GENERATOR = "search_gen_state-2026-01-01_00-00-00.json"  # a pickle, despite its name


def _experiment(tmp_path, state: bytes, searcher: bytes):
    (tmp_path / STATE).write_bytes(state)
    (tmp_path / SEARCHER).write_bytes(searcher)
    (tmp_path / SNAPSHOTS).mkdir()
    (tmp_path / SNAPSHOTS / STATE).write_text(json.dumps({"trial_data": [1, 2]}))
    (tmp_path / SNAPSHOTS / SEARCHER).write_bytes(pickle.dumps({"study": "s"}))
    return tmp_path


def test_whole_files_are_left_as_tune_wrote_them(tmp_path):
    newer = json.dumps({"trial_data": [1, 2, 3]}).encode()  # a step past the snapshot
    experiment = _experiment(tmp_path, newer, pickle.dumps({"study": "t"}))
    assert repair(str(experiment)) == []
    assert (experiment / STATE).read_bytes() == newer


def test_tunes_pickles_named_json_are_judged_by_their_content(tmp_path):
    # Tune pickles its search wrappers' state into `.json` files; taken for cut-short JSON, they
    # were put back from an older snapshot, and a search killed in its closing phase hung.
    experiment = _experiment(tmp_path, json.dumps({"trial_data": [1]}).encode(), pickle.dumps({}))
    newer, older = pickle.dumps({"counter": 24}), pickle.dumps({"counter": 2})
    (experiment / GENERATOR).write_bytes(newer)
    (experiment / SNAPSHOTS / GENERATOR).write_bytes(older)
    assert repair(str(experiment)) == []
    assert (experiment / GENERATOR).read_bytes() == newer
    (experiment / GENERATOR).write_bytes(newer[:-3])  # cut short: put back
    assert repair(str(experiment)) == [GENERATOR]
    assert (experiment / GENERATOR).read_bytes() == older


def test_state_tune_saved_but_never_copied_to_storage_is_put_back(tmp_path):
    # A kill just after Tune's first save to its staging folder: tuner's snapshot holds the
    # state, the storage folder nothing; Tune's restore would start an empty search.
    experiment = _experiment(tmp_path, b"{}", pickle.dumps({}))
    (experiment / STATE).unlink()
    (experiment / SEARCHER).unlink()
    assert repair(str(experiment)) == [STATE, SEARCHER]
    assert json.loads((experiment / STATE).read_text()) == {"trial_data": [1, 2]}


def test_cut_short_files_are_put_back_from_the_snapshot(tmp_path):
    whole = pickle.dumps({"study": "t"})
    experiment = _experiment(tmp_path, b'{"trial_data": [1, 2', whole[:-5])
    assert repair(str(experiment)) == [STATE, SEARCHER]
    assert json.loads((experiment / STATE).read_text()) == {"trial_data": [1, 2]}
    assert pickle.loads((experiment / SEARCHER).read_bytes()) == {"study": "s"}


def test_a_cut_short_file_without_a_copy_is_a_usage_error(tmp_path):
    experiment = _experiment(tmp_path, b"", pickle.dumps({}))
    (experiment / SNAPSHOTS / STATE).unlink()
    with pytest.raises(UsageError, match=f"{STATE} was cut short.*start the search again"):
        repair(str(experiment))


def _checkpoint_every_step(config: dict) -> None:
    """A trial that checkpoints every step, far faster than Tune saves its state (10 s or more)."""
    for step in range(config["steps"]):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "weights.bin").write_bytes(bytes(1000))
            tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(folder))


class _MostCheckpoints(tune.Callback):
    """The most checkpoint folders a trial had when it reported one (after the retention ran)."""

    most = 0

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        there = list(Path(checkpoint.path).parent.glob("checkpoint_*"))
        self.most = max(self.most, len(there))


@pytest.mark.slow
def test_checkpoints_do_not_pile_up_between_tunes_saves(ray_session, tmp_path):
    """Between two of Tune's saves a trial keeps the checkpoints those saves may name and its
    latest, not one per step; once the search has finished, only its latest."""
    probe = _MostCheckpoints()
    steps = 30
    tuner = tune.Tuner(
        _checkpoint_every_step,
        param_space={"steps": steps},
        run_config=tune.RunConfig(
            name="retention",
            storage_path=str(tmp_path),
            callbacks=[CheckpointRetention(), probe],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            verbose=0,
        ),
    )
    result = tuner.fit()[0]
    assert result.metrics["step"] == steps - 1
    assert 1 <= probe.most <= 3
    checkpoints = [path.name for path in Path(result.path).glob("checkpoint_*")]
    assert checkpoints == [f"checkpoint_{steps - 1:06d}"]
