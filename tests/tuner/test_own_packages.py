"""tuner's own `data` and `models` packages are the ones imported wherever tuner runs from: a
project folder commonly holds its own data/ (images) and models/ (saved models) folders, which
`python -m tuner` (the working directory first on sys.path) once imported in their place."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import own_tuner_env
from tuner.tracking.records import latest_parent

SPEC = """\
name: own_packages
data: {dataset: digits, seed: 0, max_train: 300}
search: {algorithm: random, num_samples: 1, seed: 0}
scheduler: {type: fifo, max_epochs: 1}
space:
  model: {name: simple_cnn, width: 8, depth: 1}
  optimizer: {name: adam, lr: 0.01}
  batch_size: 64
"""


def _project(tmp_path: Path) -> Path:
    """A user's project folder: images under data/, a saved model under models/."""
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "cats" / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "best.pt").write_bytes(b"weights")
    return tmp_path


def _tuner(folder: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tuner", *args]
    return subprocess.run(
        command, cwd=folder, env=own_tuner_env(), capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_listing_from_a_folder_with_its_own_data_and_models(tmp_path):
    folder = _project(tmp_path)
    models = _tuner(folder, "list", "models")
    assert models.returncode == 0, models.stderr[-2000:]
    assert "simple_cnn" in models.stdout
    datasets = _tuner(folder, "list", "datasets")
    assert datasets.returncode == 0, datasets.stderr[-2000:]
    assert "digits" in datasets.stdout


@pytest.mark.slow
def test_a_search_from_a_folder_with_its_own_data_and_models(tmp_path):
    folder = _project(tmp_path)
    (folder / "spec.yaml").write_text(SPEC)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    searched = _tuner(folder, "run", "spec.yaml", "--tracking-uri", uri)
    assert searched.returncode == 0, searched.stderr[-3000:]
    parent = latest_parent(MlflowClient(uri), "own_packages")
    assert parent.info.status == "FINISHED"
    assert 0.0 < parent.data.metrics["test_acc"] <= 1.0
    assert (folder / "models" / "best.pt").read_bytes() == b"weights"  # the user's, untouched
