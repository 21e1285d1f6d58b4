"""Tune's state files cut short by a kill are put back from tuner's whole copies before a resume."""

from __future__ import annotations

import json
import pickle

import pytest

from tuner.errors import UsageError
from tuner.tune_state import SNAPSHOTS, repair

STATE = "experiment_state-2026-01-01_00-00-00.json"
SEARCHER = "searcher-state-2026-01-01_00-00-00.pkl"


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
