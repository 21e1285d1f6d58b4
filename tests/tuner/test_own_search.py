"""The user's own code searched end to end with real Ray, Optuna and MLflow: a model and a dataset
by import path under the zoo's trainable, a training function of its own killed mid-search and
resumed, and examples/own_training_loop as shipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.helpers import new_store, own_tuner_env, tuner_run, wait_for_epochs
from tests.processes import kill_group
from tests.tuner.own_package import PACKAGE, importers, write_package
from tuner.commands.cli import main
from tuner.tracking.records import latest_parent, trials_of
from tuner.tracking.tags import Status, Tag

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "own_training_loop" / "digits_loop.yaml"

OWN_MODEL_AND_DATA = f"""\
name: own_scans_deep
data: {{dataset: "{PACKAGE}.data:load_scans", options: {{count: 240}}, seed: 0}}
search: {{algorithm: optuna, num_samples: 2, seed: 0}}
scheduler: {{type: fifo, max_epochs: 2}}
final: {{repeats: 1}}
resources: {{cpu: 1}}
space:
  model: {{name: "{PACKAGE}.nets:wide_net", width: {{int: [8, 16]}}}}
  optimizer: {{name: adam, lr: 0.01}}
"""


def _epochs(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_own_model_and_dataset_are_searched_and_imported_by_the_workers(
    ray_session, tmp_path_factory, capsys
):
    store = new_store(tmp_path_factory, "own_model")
    package = write_package(store.tmp)  # beside the spec; Ray's workers started elsewhere
    tuner_run(store, OWN_MODEL_AND_DATA)
    out = capsys.readouterr().out
    assert f"tuner: your code: data.dataset {PACKAGE}.data:load_scans (" in out
    assert f"space.model.name {PACKAGE}.nets:wide_net (" in out
    # The trials' workers imported the package (from the spec's folder, which the search sent).
    assert importers(package) - {os.getpid()}
    client = store.client
    parent = latest_parent(client, "own_scans_deep")
    trials = trials_of(client, parent)
    assert len(trials) == 2 and {t.status for t in trials} == {Status.COMPLETED}
    for trial in trials:
        assert _epochs(client, trial.run_id, "val_acc") == [1, 2]
        assert trial.params["model.name"] == f"{PACKAGE}.nets:wide_net"
    assert parent.data.metrics["test_acc"] > 0.5  # three easy classes
    assert parent.data.tags[Tag.CODE_PATH] == f'["{store.tmp}"]'  # the spec's folder = the cwd


OWN_FUNCTION = f"""\
name: own_scans_fit
trainable: "{PACKAGE}.train:fit"
data: {{dataset: "{PACKAGE}.data:load_scans", options: {{count: 240}}, seed: 0}}
objectives: [{{val_acc: max}}, {{model_params: min}}]
search: {{algorithm: optuna, num_samples: 3, max_concurrent: 1, seed: 0}}
scheduler: {{type: fifo, max_epochs: 2}}
final: {{repeats: 1}}
resources: {{cpu: 1}}
space:
  lr: {{loguniform: [1e-2, 5e-2]}}
  width: {{choice: [8, 16]}}
  sleep: 2  # seconds an epoch: a search long enough to be killed
"""


def test_own_training_function_killed_then_resumed_records_each_epoch_once(
    ray_session, tmp_path, monkeypatch
):
    folder = tmp_path / "project"
    write_package(folder)
    spec = folder / "own_scans_fit.yaml"
    spec.write_text(OWN_FUNCTION)
    uri, storage, log = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "ray", tmp_path / "log"
    command = [sys.executable, "-m", "tuner", "run", str(spec), "--tracking-uri", uri]
    with log.open("w") as output:
        search = subprocess.Popen(
            [*command, "--storage", str(storage)],
            cwd=folder,
            env=own_tuner_env(),
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    client = MlflowClient(uri)
    try:
        wait_for_epochs(client, "own_scans_fit", search, 1, log)
    finally:
        kill_group(search)
    # From elsewhere: the package is found on the code path the search recorded.
    monkeypatch.chdir(tmp_path)
    assert main(["resume", "own_scans_fit", "--tracking-uri", uri]) == 0

    parent = latest_parent(client, "own_scans_fit")
    trials = trials_of(client, parent)
    assert sorted(t.trial_id for t in trials) == sorted({t.trial_id for t in trials})
    assert len(trials) == 3 and {t.status for t in trials} == {Status.COMPLETED}
    for trial in trials:  # resumed from tuner.checkpoint(): no epoch trained or logged twice
        assert _epochs(client, trial.run_id, "val_acc") == [1, 2]
        assert _epochs(client, trial.run_id, "val_margin") == [1, 2]  # its own metric too
        assert _epochs(client, trial.run_id, "model_params") == [0]  # a cost: once
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["test_acc"] > 0.5  # through the package's test()
    assert any(trial.pareto for trial in trials)  # a front of val_acc and the costs it reported
    assert main(["best", "own_scans_fit", "--tracking-uri", uri, "--pareto"]) == 0
    assert main(["report", "own_scans_fit", "--tracking-uri", uri, "--out", str(tmp_path)]) == 0
    assert list(tmp_path.glob("*.html"))


def test_the_example_training_loop_runs_as_shipped(ray_session, tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # the example's module is found beside its spec
    flags = ["--num-samples", "2", "--max-epochs", "3", "--set", "final.repeats=1"]
    run = ["run", str(EXAMPLE), "--tracking-uri", uri, "--storage", str(tmp_path / "ray")]
    assert main([*run, *flags]) == 0
    out = capsys.readouterr().out
    assert f"trainable digits_loop:fit ({EXAMPLE.with_name('digits_loop.py')})" in out
    parent = latest_parent(MlflowClient(uri), "own_training_loop")
    assert parent.data.metrics["test_acc"] > 0.8
    assert "models:/own_training_loop/1" in out  # its network registered, as a zoo model's
