"""Kill the driver for real mid-search, resume, and check MLflow holds each trial exactly once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tuner.cli import main

SPEC = """\
name: digits_resume
data: {dataset: digits, seed: 0}
search: {algorithm: optuna, num_samples: 6, max_concurrent: 2, seed: 3}
scheduler: {type: fifo, max_epochs: 6}
resources: {cpu: 1}
space:
  model: {name: simple_cnn, width: {int: [16, 32]}, depth: 2}
  optimizer: {name: adam, lr: {loguniform: [1e-3, 1e-2]}}
  batch_size: 32
"""
NUM_TRIALS = 6


def _finished_epochs(db: Path) -> int:
    """Per-epoch metrics MLflow has recorded so far (read straight from its SQLite store)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as connection:
            rows = connection.execute("select count(*) from metrics where key = 'val_acc'")
            return rows.fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


@pytest.mark.slow
def test_sigkill_then_resume_records_every_trial_once(ray_session, tmp_path):
    spec = tmp_path / "digits_resume.yaml"
    spec.write_text(SPEC)
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    storage = tmp_path / "ray"
    command = [
        sys.executable,
        "-m",
        "tuner",
        "run",
        str(spec),
        "--tracking-uri",
        uri,
        "--storage",
        str(storage),
    ]
    # Its own session, so the kill takes the driver and the Ray it started, as a crash would.
    driver = subprocess.Popen(
        command,
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while _finished_epochs(db) < 8 and time.monotonic() < deadline:
            assert driver.poll() is None, "the search ended before it could be killed"
            time.sleep(0.5)
        assert _finished_epochs(db) >= 8, "the search never got going"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("digits_resume")
    before = client.search_runs([experiment.experiment_id])
    assert any(run.info.status == "RUNNING" for run in before)  # the crash left runs open

    code = main(["run", str(spec), "--resume", "--tracking-uri", uri, "--storage", str(storage)])
    assert code == 0

    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("tuner.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("tuner.role") == "trial"]
    assert len(parents) == 1  # the resumed search continued the same parent run
    trial_ids = [c.data.tags["tuner.trial_id"] for c in children]
    assert len(trial_ids) == NUM_TRIALS
    assert len(set(trial_ids)) == NUM_TRIALS  # no duplicates
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []  # no orphans
    assert {c.data.tags["tuner.status"] for c in children} == {"completed"}
    for child in children:  # each trial's epochs are recorded once each, 1..6
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert sorted(set(steps)) == list(range(1, 7))
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["test_acc"] >= 0.9
