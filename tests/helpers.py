"""What several test modules share besides fixtures: a small digits search, a finished run's
store, `tuner run` from a test (and waiting for its first epochs), and the best trial's
checkpoint on the test split."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mlflow.tracking import MlflowClient

from tests.tuner.own_package import PACKAGE, write_package
from tuner.reading.summary import Summary
from tuner.tracking.records import TrialRecord

if TYPE_CHECKING:
    from tuner.trainables.metrics import Evaluation


DIGITS_SEARCH = """\
name: digits_search
data: {dataset: digits, seed: 0}
search: {algorithm: optuna, num_samples: 2, max_concurrent: 2, seed: 0}  # 3 with the CLI flag
scheduler: {type: asha, max_epochs: 3, grace_period: 1, reduction_factor: 2}
final: {repeats: 1}  # the best trial tested as is: repeats have their own tests (test_final.py)
resources: {cpu: 1}
space:
  model: {name: simple_cnn, width: {int: [16, 32]}, depth: 2}
  optimizer:
    choice:
      sgd: {lr: {loguniform: [1e-2, 1e-1]}, momentum: {uniform: [0.5, 0.9]}}
      adam: {lr: {loguniform: [1e-3, 1e-2]}}
  batch_size: {choice: [32, 64]}
"""


@dataclass(frozen=True)
class Pace:
    """The pace file of a paced search: how many epochs its trials may have trained so far."""

    path: Path

    def allow(self, epochs: int) -> None:
        partial = self.path.with_name(f"{self.path.name}.partial")
        partial.write_text(str(epochs))
        partial.replace(self.path)  # at once: a trial never reads half a number


def paced_search(folder: Path, name: str, trials: int, epochs: int) -> Pace:
    """``folder/{name}.yaml``: a search of digits (two trials at a time) whose training function
    (tests/tuner/own_package.py's, written beside it) trains each epoch only once the test
    allows it (``Pace.allow``): a server can be stopped, or the driver killed, between given
    epochs on any machine. Nothing is allowed yet."""
    write_package(folder)
    pace = Pace(folder / f"{name}.pace")
    pace.allow(0)
    (folder / f"{name}.yaml").write_text(f"""\
name: {name}
trainable: "{PACKAGE}.train:fit"
data: {{dataset: digits, seed: 0}}
search: {{algorithm: random, num_samples: {trials}, max_concurrent: 2, seed: 0}}
scheduler: {{type: fifo, max_epochs: {epochs}}}
final: {{repeats: 1}}  # no re-training of tied configs: the search's own run is what is tested
resources: {{cpu: 1}}
space:
  lr: {{loguniform: [1e-3, 1e-2]}}
  pace: "{pace.path}"
""")
    return pace


@dataclass(frozen=True)
class Store:
    """Where finished `tuner run`s of a test live: MLflow's store and Ray Tune's storage."""

    tmp: Path
    uri: str
    storage: Path

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)


def tuner_run(store: Store, spec_text: str, *flags: str) -> Path:
    """`tuner run` a spec (and CLI ``flags``) into ``store`` (MLflow's ./mlruns too) and check
    that it exits 0."""
    from tuner.commands.cli import main

    name = spec_text.split("\n", 1)[0].removeprefix("name: ")
    spec_path = store.tmp / f"{name}.yaml"
    spec_path.write_text(spec_text)
    run = ["run", str(spec_path), "--tracking-uri", store.uri, "--storage", str(store.storage)]
    run += flags
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(store.tmp)  # MLflow keeps artifacts in ./mlruns: the test's tmp, not the repo
        assert main(run) == 0
    return spec_path


def new_store(tmp_path_factory: pytest.TempPathFactory, name: str) -> Store:
    """An empty MLflow store and Ray storage in a fresh tmp dir."""
    tmp = tmp_path_factory.mktemp(name)
    return Store(tmp, f"sqlite:///{tmp / 'mlflow.db'}", tmp / "ray")


def best_checkpoint_evaluation(store: Store, spec_path: Path) -> Evaluation:
    """The best trial's last checkpoint on the test split, rebuilt from Ray's storage the way
    the runner ranks and tests it without ``final.retrain``."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    from tuner.commands.run import _ranked
    from tuner.search.inputs import load_data, trial_settings
    from tuner.spec.document import load_spec
    from tuner.trainables import deep

    spec = load_spec(spec_path)
    grid = ResultGrid(ExperimentAnalysis(str(store.storage / spec.name)))
    best = _ranked(grid, spec)[0]
    return deep.evaluate_test(best, splits=load_data(spec), settings=trial_settings(spec))


def own_tuner_env() -> dict[str, str]:
    """The environment of a `tuner` process a test starts: the command line alone says which
    store it writes to, and it starts its own Ray."""
    unset = ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")
    return {key: value for key, value in os.environ.items() if key not in unset}


FIRST_EPOCHS_S = 600  # Ray's start, torch's import, the data, a few epochs, on a loaded 2-core box


def epochs_logged(client: MlflowClient, name: str) -> int:
    """Epochs MLflow holds for the trials of experiment ``name``'s latest search so far (0
    before its parent run exists)."""
    from tuner.core.errors import UsageError
    from tuner.tracking.records import latest_parent, trials_of

    try:
        parent = latest_parent(client, name)
    except UsageError:  # no experiment, or no parent run yet
        return 0
    return sum(
        len(client.get_metric_history(t.run_id, "val_acc")) for t in trials_of(client, parent)
    )


def wait_for_epochs(
    client: MlflowClient, name: str, search: subprocess.Popen, epochs: int, log: Path
) -> None:
    """Wait until ``search`` (`tuner run` in its own process, printing to ``log``) has logged
    ``epochs`` epochs of experiment ``name``; fail with what it printed if it ends first."""
    deadline = time.monotonic() + FIRST_EPOCHS_S
    while epochs_logged(client, name) < epochs:
        assert search.poll() is None, f"the search ended first:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {epochs} epochs logged:\n{log.read_text()}"
        time.sleep(1)


def refused_at_load(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> str:
    """The one line `tuner run` prints for a spec file holding ``text`` that the spec loader
    refuses (exit 2, nothing written beside the spec), starting with the file's path."""
    from tuner.commands.cli import main
    from tuner.spec.document import SpecError, load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    # load_spec first: if it let the value through, `run` would start a search.
    with pytest.raises(SpecError, match=f"^{spec}: "):
        load_spec(spec)
    assert main(["run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing written
    return err


def summary_of(trials: list[TrialRecord], **fields: Any) -> Summary:
    """A closing summary of ``trials`` (best first), its other fields as small as they can be
    unless given."""
    defaults: dict[str, Any] = {
        "experiment": "e",
        "tracking_uri": "sqlite:///x.db",
        "artifacts": "",
        "parent_run_id": "p",
        "storage": "",
        "metric": "val_acc",
        "best_trial_id": trials[0].trial_id,
        "test_metrics": {},
        "model_size": None,
        "retrained": False,
        "model_uri": None,
        "trials": trials,
        "sampled": [],
        "val_images": 288,
    }
    return Summary(**(defaults | fields))
