"""Kill the driver for real mid-search, resume, and check MLflow holds each trial exactly once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from ray import cloudpickle

from tests.processes import kill_group
from tuner.commands.cli import main
from tuner.core.errors import UsageError
from tuner.tracking.experiment import Experiment
from tuner.tracking.records import overrides_of
from tuner.tracking.tags import PARENT_ROLE, TRIAL_ROLE, SearchTags, Status, StudyTags, Tag
from tuner.trainables.trial_report import ONCE

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


def _search_files(tmp_path: Path, text: str) -> tuple[Path, str, Path]:
    """A test search's spec file (``text``), MLflow store URI and Tune storage folder."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    return spec, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "ray"


def _run_and_kill(
    spec: Path, uri: str, storage: Path, after_epochs: int, flags: Sequence[str] = ()
) -> None:
    """Start `tuner run` in its own session and SIGKILL it, with the Ray it started, midway."""
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
        *flags,
    ]
    db = Path(uri.removeprefix("sqlite:///"))
    driver = subprocess.Popen(
        command,
        cwd=spec.parent,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while _finished_epochs(db) < after_epochs and time.monotonic() < deadline:
            assert driver.poll() is None, "the search ended before it could be killed"
            time.sleep(0.5)
        assert _finished_epochs(db) >= after_epochs, "the search never got going"
    finally:
        kill_group(driver)


def _cut_short(experiment: Path, pattern: str) -> None:
    """Empty Tune's newest state file, as a kill while Tune copies it to storage leaves it."""
    newest = sorted(experiment.glob(pattern))[-1]
    newest.write_bytes(b"")


def _runs(uri: str, name: str) -> tuple[list, list, list]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(Tag.ROLE) == PARENT_ROLE]
    children = [r for r in runs if r.data.tags.get(Tag.ROLE) == TRIAL_ROLE]
    return runs, parents, children


# Overrides a resume must keep: another name (so another storage folder and MLflow experiment),
# a shorter budget than the file's 6 epochs, and a subset of the data.
FLAGS = ("--name", "digits_set", "--max-epochs", "4", "--set", "data.max_train=900")


@pytest.mark.slow
def test_sigkill_then_resume_records_every_trial_once(ray_session, tmp_path, capsys):
    spec, uri, storage = _search_files(tmp_path, SPEC)
    _run_and_kill(spec, uri, storage, after_epochs=8, flags=FLAGS)
    runs, _, _ = _runs(uri, "digits_set")
    assert any(run.info.status == "RUNNING" for run in runs)  # the crash left runs open
    _cut_short(storage / "digits_set", "searcher-state-*.pkl")  # Optuna's study, cut short

    # From what MLflow recorded alone: the spec file, the overrides, the storage folder.
    assert main(["resume", "digits_set", "--tracking-uri", uri]) == 0
    lost = capsys.readouterr().out.count("was not in Tune's saved state: its run is removed")

    client = MlflowClient(uri)
    runs, parents, children = _runs(uri, "digits_set")
    assert len(parents) == 1  # the resumed search continued the same parent run
    trial_ids = [c.data.tags[Tag.TRIAL_ID] for c in children]
    assert len(trial_ids) == NUM_TRIALS
    assert len(set(trial_ids)) == NUM_TRIALS  # no duplicates
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []  # no orphans
    assert {c.data.tags[Tag.STATUS] for c in children} == {Status.COMPLETED}
    for child in children:  # each trial's epochs are recorded once each, 1..4, in order
        for key in child.data.metrics:  # every metric of a trial run is logged per epoch
            history = client.get_metric_history(child.info.run_id, key)  # in logging order
            # The whole list, not a set: an epoch a resumed trial logs again (replayed from its
            # checkpoint, or by a second recorder) appears twice here and fails this. The
            # model's size is logged once, without a step.
            steps = [0] if key in ONCE else list(range(1, 5))
            assert [m.step for m in history] == steps, (child.info.run_id, key)
    parent = parents[0]
    # 900 of digits' 1,437 train+val images (the file's 1,149 + 288 without the override); a
    # resume that loaded other images than the search started on is refused.
    assert parent.data.tags[Tag.IMAGES] == "train=720 val=180 test=360"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["test_acc"] >= 0.9
    # Optuna learned each trial's value once, the resumed ones' too. A trial it was asked for
    # after Tune's last save is lost with the driver: FAIL if it was running, not left RUNNING
    # forever; COMPLETE if it ended before the kill (Optuna's finished trials stay finished),
    # while Tune runs another in its place and the resume removes the lost one's MLflow run.
    study_tags = StudyTags.of(parent)
    study = optuna.load_study(study_name=study_tags.name, storage=study_tags.storage)
    states = [trial.state.name for trial in study.trials]
    assert NUM_TRIALS <= states.count("COMPLETE") <= NUM_TRIALS + lost, (states, lost)
    assert set(states) <= {"COMPLETE", "FAIL"}, states


SOAK = """\
name: soak
data: {dataset: digits, seed: 0}
search: {algorithm: random, num_samples: 40, seed: 1}
scheduler: {type: asha, max_epochs: 3, grace_period: 1, reduction_factor: 2}
max_failures: 2
resources: {cpu: 1}
space:
  model: {name: simple_cnn, width: {int: [8, 24]}, depth: 2}
  optimizer: {name: adam, lr: {loguniform: [1e-3, 1e-2]}}
  batch_size: 64
  fault: {epoch: {choice: [0, 0, 0, 0, 2]}}  # ~20% of trials raise in epoch 2 (0: never)
"""


@pytest.mark.slow
def test_soak_40_trials_with_failures_and_a_driver_kill(ray_session, tmp_path):
    spec, uri, storage = _search_files(tmp_path, SOAK)
    _run_and_kill(spec, uri, storage, after_epochs=30)
    # What CI once hit: the kill struck while Tune copied its experiment state to storage, and
    # Tune's restore silently began a new search from an empty config.
    _cut_short(storage / "soak", "experiment_state-*.json")
    assert main(["resume", "soak", "--tracking-uri", uri, "--storage", str(storage)]) == 0

    runs, parents, children = _runs(uri, "soak")
    trial_ids = [c.data.tags[Tag.TRIAL_ID] for c in children]
    assert len(parents) == 1
    assert len(set(trial_ids)) == 40  # 40/40 trials accounted for
    assert len(trial_ids) == 40  # 0 duplicates
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []  # 0 left RUNNING
    statuses = {c.data.tags[Tag.STATUS] for c in children}
    # Every injected failure was retried.
    assert statuses <= {Status.COMPLETED, Status.EARLY_STOPPED}
    faulty = [c for c in children if c.data.params["fault.epoch"] == "2"]
    assert 3 <= len(faulty) <= 16


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(ray_session, tmp_path):
    spec = tmp_path / "digits_resume.yaml"
    spec.write_text(SPEC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        sys.executable,
        "-m",
        "tuner",
        "run",
        str(spec),
        "--tracking-uri",
        uri,
        "--storage",
        str(tmp_path / "ray"),
    ]
    # A shell's background job ignores SIGINT, and children inherit that: restore the default.
    driver = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while _finished_epochs(tmp_path / "mlflow.db") < 4 and time.monotonic() < deadline:
        assert driver.poll() is None
        time.sleep(0.5)
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130
    assert f"Continue with: python -m tuner resume digits_resume --tracking-uri {uri}" in err
    runs, parents, children = _runs(uri, "digits_resume")
    assert parents[0].data.tags[Tag.STATUS] == Status.INTERRUPTED
    assert parents[0].info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in runs)
    assert any(c.data.tags[Tag.STATUS] == Status.INTERRUPTED for c in children)

    assert (
        main(
            [
                "run",
                str(spec),
                "--resume",
                "--tracking-uri",
                uri,
                "--storage",
                str(tmp_path / "ray"),
            ]
        )
        == 0
    )
    runs, parents, children = _runs(uri, "digits_resume")
    assert parents[0].info.status == "FINISHED"
    assert len(children) == NUM_TRIALS
    assert {c.data.tags[Tag.STATUS] for c in children} == {Status.COMPLETED}


def test_run_resume_with_other_flags_than_the_start_is_refused_before_anything_starts(
    tmp_path, capsys
):
    spec = tmp_path / "digits_resume.yaml"
    spec.write_text(SPEC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    started = Experiment(uri, "digits_resume")
    started.start(spec, SearchTags(overrides=("scheduler.max_epochs=4",)))
    capsys.readouterr()  # MLflow's notes on creating the store

    code = main(["run", str(spec), "--resume", "--max-epochs", "5", "--tracking-uri", uri])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "tuner: error: --resume continues 'digits_resume' as it was started, with "
        "scheduler.max_epochs=4; got scheduler.max_epochs=5: repeat those flags, or run: "
        "python -m tuner resume digits_resume"
    )
    assert not (tmp_path / "tuner_results").exists()


def test_a_recorded_credential_override_cannot_be_resumed_from_mlflow(tmp_path):
    spec = tmp_path / "digits_resume.yaml"
    spec.write_text(SPEC)
    experiment = Experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "digits_resume")
    overrides = ["tracking.uri=https://me:pw@host", "data.options.token=abc", "seed=1"]
    experiment.start(spec, SearchTags(overrides=tuple(overrides)))
    parent = experiment.client.get_run(experiment.parent_id)
    with pytest.raises(UsageError, match=r"--set data.options.token=\.\.\. held a credential"):
        overrides_of(parent)


@pytest.mark.slow
def test_a_random_search_killed_as_its_last_trials_ended_resumes_to_the_end(ray_session, tmp_path):
    spec, uri, storage = _search_files(tmp_path, SPEC)
    random = ("--set", "search.algorithm=random", "--set", "search.num_samples=2")
    short = ("--max-epochs", "2", "--set", "data.max_train=400")
    flags = ["--name", "digits_random", *random, *short, "--tracking-uri", uri]
    assert main(["run", str(spec), *flags, "--storage", str(storage)]) == 0
    # What a kill just as the last trials ended once left (CI, read from its files): Tune's
    # state holds both trials finished, its random searcher's still counts them as running.
    _, (parent,), children = _runs(uri, "digits_random")
    (searcher_file,) = (storage / "digits_random").glob("basic-variant-state-*.json")
    state = cloudpickle.loads(searcher_file.read_bytes())
    state["_live_trials"] = {child.data.tags[Tag.TRIAL_ID] for child in children}
    state["_finished"] = False
    searcher_file.write_bytes(cloudpickle.dumps(state))
    MlflowClient(uri).update_run(parent.info.run_id, "RUNNING")  # as the killed driver left it

    resume = [sys.executable, "-m", "tuner", "resume", "digits_random", "--tracking-uri", uri]
    driver = subprocess.Popen(
        resume, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL
    )
    try:
        assert driver.wait(timeout=180) == 0  # it waited for the two trials forever
    finally:
        if driver.poll() is None:
            kill_group(driver)
    _, (parent,), children = _runs(uri, "digits_random")
    assert parent.info.status == "FINISHED"
    assert len(children) == 2
