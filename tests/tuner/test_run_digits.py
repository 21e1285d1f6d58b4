"""End to end: `tuner run` on the embedded digits with real Ray, Optuna, ASHA and MLflow."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from ray.tune import ExperimentAnalysis

from tests.helpers import DIGITS_SEARCH, new_store, tuner_run
from tuner.commands.cli import main
from tuner.publishing.artifacts import study_of
from tuner.search.progress import TrialLines
from tuner.spec import space as space_lang
from tuner.spec.document import read_yaml
from tuner.tracking.records import latest_parent, trials_of
from tuner.tracking.tags import PARENT_ROLE, TRIAL_ROLE, TRUE, Status, Tag

STATUSES = {Status.COMPLETED, Status.EARLY_STOPPED, Status.DIVERGED, Status.ERRORED}


@pytest.fixture(scope="module")
def finished_run(digits_search):
    return digits_search.uri, digits_search.tmp


def _runs(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("digits_search")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(Tag.ROLE) == PARENT_ROLE]
    children = [r for r in runs if r.data.tags.get(Tag.ROLE) == TRIAL_ROLE]
    return client, parents, children


def test_parent_run_holds_spec_best_config_and_test_metrics(finished_run):
    uri, _ = finished_run
    client, parents, _ = _runs(uri)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "digits_search"
    assert parent.data.tags[Tag.OVERRIDES] == '["search.num_samples=3"]'  # the CLI flag won
    assert 0.5 < parent.data.metrics["test_acc"] <= 1.0
    assert 0.0 < parent.data.metrics["best_val_acc"] <= 1.0
    for name in ("test_precision", "test_recall", "test_f1"):
        assert 0.0 < parent.data.metrics[name] <= 1.0
    branch = parent.data.params["best.optimizer.name"]
    assert branch in {"sgd", "adam"} and f"best.optimizer.{branch}.lr" in parent.data.params
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "spec")}
    assert artifacts == {"spec/digits_search.yaml"}


def test_one_child_run_per_trial_with_params_metrics_and_status(finished_run):
    uri, _ = finished_run
    client, parents, children = _runs(uri)
    assert len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert len({c.data.tags[Tag.TRIAL_ID] for c in children}) == 3
    for child in children:
        status = child.data.tags[Tag.STATUS]
        assert status in STATUSES
        params = child.data.params
        assert params["model.name"] == "simple_cnn"
        assert 16 <= int(params["model.width"]) <= 32
        # Conditional branches: a branch's settings under its name, only where it was taken.
        branch = params["optimizer.name"]
        assert ("optimizer.sgd.momentum" in params) == (branch == "sgd")
        assert f"optimizer.{branch}.lr" in params and "optimizer.lr" not in params
        # The model's size: one value, not one per epoch.
        assert len(client.get_metric_history(child.info.run_id, "model_params")) == 1
        history = client.get_metric_history(child.info.run_id, "val_acc")
        steps = [m.step for m in history]
        assert steps == list(range(1, len(steps) + 1))
        assert (len(steps) == 3) == (status == Status.COMPLETED)
        assert {"train_loss", "val_loss", "val_acc"} <= set(child.data.metrics)
    best = [c for c in children if c.data.tags.get(Tag.BEST) == TRUE]
    assert len(best) == 1
    # The parent's best_val_acc is the chosen trial's final value (tuner.core.selection).
    assert best[0].data.metrics["final_val_acc"] == pytest.approx(
        parents[0].data.metrics["best_val_acc"]
    )


def test_the_terminal_shows_tuners_progress_not_rays_or_optunas(digits_search):
    """Off a terminal: plain progress lines, one line per trial, each closing step named; Ray's
    table and messages and Optuna's only with --verbose."""
    output = (digits_search.tmp / "output.txt").read_text()
    progress = [line for line in output.splitlines() if line.startswith("trials ")]
    assert progress and progress[-1].startswith("trials 3/3 done, 0 running · epochs ")
    assert " · best val_acc 0." in progress[-1]
    assert all("\r" not in line and "\x1b" not in line for line in progress)
    ended = [line.split()[2] for line in output.splitlines() if line.startswith("trial ")]
    assert len(ended) == 3 and {status.rstrip(":") for status in ended} <= STATUSES
    steps = ["testing the best trial on the test split…", "logging plots and tables…"]
    steps += ["registering the model…", "recording the outcome in MLflow…"]
    assert [line for line in output.splitlines() if line in steps] == steps
    chatter = ("Result logdir", "A new study created", "== Status ==", "Token auth")
    chatter += ("Successfully registered model", "Created version")  # MLflow's registration
    for line in chatter:
        assert line not in output
    assert "  model:  models:/digits_search/1; python -m tuner predict digits_search" in output


def test_tuner_best_reads_mlflow(finished_run, capsys):
    uri, _ = finished_run
    _, parents, _ = _runs(uri)
    assert main(["best", "digits_search", "--top", "2", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert parents[0].info.run_id in out
    assert "test_acc=" in out
    assert out.count("optimizer.name=") == 2  # two rows, sampled params only
    assert "model.name" not in out  # a constant, not shown

    assert main(["best", "digits_search", "--json", "--tracking-uri", uri]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["trials"]) == 3
    values = [t["value"] for t in report["trials"]]
    assert values == sorted(values, reverse=True)
    assert report["trials"][0]["best"] is True


def test_tuner_best_unknown_experiment_exits_2(finished_run, capsys):
    uri, _ = finished_run
    assert main(["best", "nope", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "no experiment named 'nope'" in err and "digits_search" in err


def test_a_parameter_has_one_name_in_mlflow_the_trial_lines_and_the_study(digits_search):
    """Through the real Optuna + Ray path: each trial's sampled settings carry the same names
    in its MLflow params, its progress line, the parent's tuner.sampled tag and the study the
    plots are drawn from; Tune's configs hold the space's keys only."""
    tree = space_lang.parse(read_yaml(DIGITS_SEARCH, "spec")["space"])
    client = digits_search.client
    parent = latest_parent(client, "digits_search")
    sampled = parent.data.tags[Tag.SAMPLED].split(",")
    assert sampled == space_lang.sampled_keys(tree)
    assert "optimizer.sgd.lr" in sampled and "optimizer.adam.lr" in sampled
    records = {record.trial_id: record for record in trials_of(client, parent)}
    study = {t.user_attrs["trial_id"]: t for t in study_of(client, parent, records.values()).trials}
    lines = TrialLines("val_acc", "max", tree)
    tune_trials = ExperimentAnalysis(str(digits_search.storage / "digits_search")).trials
    assert sorted(trial.trial_id for trial in tune_trials) == sorted(records)
    for trial in tune_trials:
        assert set(trial.config) == {"model", "optimizer", "batch_size"}  # no bookkeeping keys
        logged = {k: v for k, v in records[trial.trial_id].params.items() if k in sampled}
        shown = lines.line(trial, Status.COMPLETED).split(" | ")[1].split("  ")
        assert sorted(item.split("=")[0] for item in shown) == sorted(logged)
        assert set(study[trial.trial_id].params) == set(logged)
        branch = logged["optimizer.name"]
        for key, value in study[trial.trial_id].params.items():
            assert str(value) == logged[key] or float(value) == pytest.approx(float(logged[key]))
        # Each branch's lr stays in its own range: the study never merges the two.
        lr = study[trial.trial_id].params[f"optimizer.{branch}.lr"]
        assert (1e-2 <= lr <= 1e-1) if branch == "sgd" else (1e-3 <= lr <= 1e-2)


def test_each_trial_folder_keeps_its_result_json_and_latest_checkpoint_only(digits_search):
    """Tune's result.json per trial (its histories), not the CSV and TensorBoard copies Tune
    writes by default (the driver's time on every result); and once the search has finished,
    only the latest of the trial's checkpoints (one per epoch; tune_state.CheckpointRetention)."""
    folders = [p for p in (digits_search.storage / "digits_search").iterdir() if p.is_dir()]
    trials = [folder for folder in folders if (folder / "params.json").is_file()]
    parent = latest_parent(digits_search.client, "digits_search")
    assert len(trials) == len(trials_of(digits_search.client, parent)) == 3
    for folder in trials:
        rows = (folder / "result.json").read_text().splitlines()
        assert json.loads(rows[0])["training_iteration"] == 1
        assert not (folder / "progress.csv").exists()
        assert not list(folder.glob("events.out.tfevents*"))
        checkpoints = [path.name for path in folder.glob("checkpoint_*")]
        assert checkpoints == [f"checkpoint_{len(rows) - 1:06d}"]


BUDGET_SEARCH = """\
name: budget_search
data: {dataset: digits, seed: 0}
search: {algorithm: random, num_samples: 2, max_concurrent: 2, seed: 0, time_budget_s: 20}
scheduler: {type: fifo, max_epochs: 500}
resources: {cpu: 1}
space:
  model: {name: simple_cnn, width: 16, depth: 2}
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
"""


def test_trials_the_time_budget_cut_short_end_as_stopped_early(ray_session, tmp_path_factory):
    """Tune stops running trials when search.time_budget_s runs out: their runs must not stay
    RUNNING in MLflow (they did), and the summary and `tuner best` count them as stopped."""
    store = new_store(tmp_path_factory, "budget")
    tuner_run(store, BUDGET_SEARCH)
    parent = latest_parent(store.client, "budget_search")
    assert parent.info.status == "FINISHED"
    trials = trials_of(store.client, parent)
    assert len(trials) == 2
    for trial in trials:
        assert 0 < trial.epochs < 500  # each trained, and was cut short
        assert trial.status == Status.EARLY_STOPPED, trial
        assert store.client.get_run(trial.run_id).info.status == "FINISHED"
