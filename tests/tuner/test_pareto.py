"""Multi-objective searches (``objectives:``): the spec's checks, the front's arithmetic, and a
real digits search of search_spaces/digits_pareto.yaml through Ray, Optuna and MLflow."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from ray.tune.search.optuna import OptunaSearch

from tests.helpers import new_store
from tuner.commands.cli import main
from tuner.commands.run import MAX_TESTED_FRONT
from tuner.conclusion import pareto
from tuner.reading.report import write_report
from tuner.search import searchers as search
from tuner.spec.document import SpecError, load_spec
from tuner.tracking.experiment import Experiment
from tuner.tracking.records import TrialRecord, latest_parent, trials_of
from tuner.tracking.tags import SearchTags, Status

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "search_spaces" / "digits_pareto.yaml"
THREE_PAIRS = (("val_acc", "max"), ("model_params", "min"), ("latency_ms", "min"))


# ---------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------


def test_the_first_objective_is_the_metric_and_the_searcher_gets_them_all():
    spec = load_spec(SPEC, ["objectives=[{val_loss: min}, {model_mb: min}]"])
    assert (spec.metric, spec.mode) == ("val_loss", "min")
    assert spec.objective_modes == {"val_loss": "min", "model_mb": "min"}
    config = search.tune_config(spec, spec.tree)
    assert (config.metric, config.mode) == ("val_loss", "min")  # what ASHA stops on
    searcher = config.search_alg.searcher  # inside the ConcurrencyLimiter
    assert searcher.metric == ["val_loss", "model_mb"] and searcher.mode == ["min", "min"]


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "objectives=[{val_acc: max}]",
            "--set objectives=[{val_acc: max}]: objectives: give 2 to 3 objectives, each name once",
        ),
        (
            "objectives=[{val_acc: max}, {model_mb: min}, {model_mb: min}]",
            "objectives: give 2 to 3 objectives, each name once",
        ),
        (
            "objectives=[{val_acc: max}, {model_mb: min}, {latency_ms: min}, {model_params: min}]",
            "objectives: give 2 to 3 objectives",
        ),
        ("objectives=[{val_acc: max, model_mb: min}]", "each objective is one `name: max|min`"),
        ("objectives=[{val_acc: up}, {model_mb: min}]", "objectives.0.val_acc: must be 'max'"),
        ("objectives=[{model_mb: min}, {val_acc: max}]", "objectives.0: must be one of val_acc"),
        ("objectives=[{train_acc: max}, {model_mb: min}]", "objectives.0: the search selects on"),
        (
            "objectives=[{val_acc: max}, {val_loss: min}]",
            "objectives.1: after the first objective come model costs this trainable reports: "
            "one of model_params, model_mb, latency_ms; got 'val_loss'",
        ),
        ("metric=val_loss", "--set metric=val_loss: metric: the first objective (val_acc: max)"),
        ("mode=min", "--set mode=min: mode: the first objective (val_acc: max) is the metric"),
        ("final.repeats=3", "final.repeats: picks one config by its mean validation value"),
        ("search.warm_start=[digits]", "search.warm_start: carries earlier trials' value of one"),
    ],
)
def test_bad_objectives_fail_with_one_line_naming_their_origin(override, line):
    with pytest.raises(SpecError) as raised:
        load_spec(SPEC, [override])
    message = str(raised.value)
    assert line in message and "\n" not in message
    assert message.startswith((f"--set {override}", str(SPEC)))


def test_a_classical_search_has_no_latency_to_weigh(tmp_path):
    written = (ROOT / "search_spaces" / "fashion_knn.yaml").read_text()
    knn = tmp_path / "knn.yaml"  # its metric: and mode: left to the objectives
    knn.write_text(written.replace("metric: val_acc\n", "").replace("mode: max\n", ""))
    with pytest.raises(SpecError, match="one of model_params, model_mb; got 'latency_ms'"):
        load_spec(knn, ["objectives=[{val_acc: max}, {latency_ms: min}]"])
    spec = load_spec(knn, ["objectives=[{val_f1: max}, {model_mb: min}]"])
    assert (spec.metric, spec.mode) == ("val_f1", "max")


def test_random_and_grid_searches_take_objectives_for_their_front():
    # Only Optuna samples for the objectives; every algorithm's result is a front.
    spec = load_spec(SPEC, ["search.algorithm=random"])
    assert spec.objective_modes == {"val_acc": "max", "model_params": "min"}


# ---------------------------------------------------------------------------------------------
# The front's arithmetic
# ---------------------------------------------------------------------------------------------


def _trial(trial_id: str, value: float | None, params: float, status: str = Status.COMPLETED):
    return TrialRecord(
        trial_id=trial_id,
        run_id=f"run-{trial_id}",
        status=status,
        value=value,
        epochs=3,
        params={},
        best=False,
        metrics={"model_params": params},
    )


def test_the_front_keeps_the_trials_no_other_beats_on_both_objectives():
    trials = [
        _trial("big", 0.97, 90_000),
        _trial("mid", 0.95, 9_000),
        _trial("dominated", 0.94, 20_000),  # mid is better and smaller
        _trial("tie-bigger", 0.95, 12_000),  # as good as mid, but bigger
        _trial("tiny", 0.60, 500),
        _trial("rejected", 0.0, 100, status=Status.REJECTED),  # smallest, but never trained
        _trial("diverged", 0.0, 50, status=Status.DIVERGED),
        _trial("errored", None, 400, status=Status.ERRORED),
    ]
    objectives = [("val_acc", "max"), ("model_params", "min")]
    front = pareto.front(trials, objectives)
    assert [t.trial_id for t in front] == ["big", "mid", "tiny"]  # best metric first


def test_equal_points_are_both_on_the_front_the_cheaper_tie_first():
    trials = [_trial("a", 0.9, 2_000), _trial("b", 0.9, 1_000), _trial("c", 0.9, 1_000)]
    front = pareto.front(trials, [("val_acc", "max"), ("model_params", "min")])
    assert [t.trial_id for t in front] == ["b", "c"]  # a: as good, but bigger


# ---------------------------------------------------------------------------------------------
# A real search
# ---------------------------------------------------------------------------------------------

SEARCH = [
    "--num-samples",
    "6",
    "--max-epochs",
    "2",
    "--set",
    "objectives=[{val_acc: max}, {model_params: min}, {latency_ms: min}]",
    # LeNet-5 (~60k parameters) and wide simple_cnns are rejected untrained: their costs are
    # still reported
    "--set",
    "constraints.max_params=20000",
    "--set",
    "search.seed=1",
]


@pytest.fixture(scope="module")
def pareto_search(ray_session, tmp_path_factory):
    store = new_store(tmp_path_factory, "digits_pareto")
    run = ["run", str(SPEC), "--tracking-uri", store.uri, "--storage", str(store.storage)]
    output = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(output):
        patch.chdir(store.tmp)
        assert main([*run, *SEARCH]) == 0
    parent = latest_parent(store.client, "digits_pareto")
    return store, parent, trials_of(store.client, parent), output.getvalue()


def test_optuna_was_told_every_objective_of_every_trial(pareto_search):
    store, _, trials, _ = pareto_search
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(store.storage / "digits_pareto"))
    study = searcher._ot_study  # Tune keeps the searcher's state; its study is what TPE saw
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    told = [t.values for t in study.trials if t.values is not None]
    assert len(told) == len(trials) == 6
    for values in told:  # val_acc, parameters, ms per image
        assert 0.0 <= values[0] <= 1.0 and values[1] >= 1 and values[2] > 0


def test_every_trial_records_its_costs_and_the_front_is_tagged(pareto_search):
    _, parent, trials, _ = pareto_search
    assert SearchTags.of(parent).objectives == THREE_PAIRS
    for trial in trials:  # measured before training: rejected trials have them too
        assert trial.metrics["model_params"] >= 1 and trial.metrics["latency_ms"] > 0
    assert any(t.status == Status.REJECTED for t in trials)
    front = pareto.recorded(parent, trials)
    assert front == pareto.front(trials, SearchTags.of(parent).objectives)
    assert all(t.status not in pareto.UNTRAINED for t in front)
    points = [pareto.point(t, SearchTags.of(parent).objectives) for t in trials]
    for member in front:  # no trained trial beats a member on every objective
        mine = pareto.point(member, SearchTags.of(parent).objectives)
        assert not any(p is not None and pareto.dominates(p, mine) for p in points)


def test_the_best_is_the_front_member_with_the_best_metric(pareto_search):
    _, parent, trials, _ = pareto_search
    front = [t for t in trials if t.pareto]
    [best] = [t for t in trials if t.best]
    assert best.pareto and best.value == max(t.value for t in front)
    assert parent.data.metrics["best_val_acc"] == best.value


def test_front_members_carry_test_metrics_and_no_one_else_does(pareto_search):
    _, parent, trials, output = pareto_search
    front = pareto.recorded(parent, trials)
    tested = pareto.ordered([t for t in trials if "test_acc" in t.metrics], THREE_PAIRS)
    assert tested == front[:MAX_TESTED_FRONT]
    for trial in tested:
        assert 0.0 < trial.metrics["test_acc"] <= 1.0 and "test_f1" in trial.metrics
    assert "--pareto" in output  # the closing summary says how to print the front


def test_tuner_best_pareto_prints_the_front(pareto_search, capsys):
    store, parent, trials, _ = pareto_search
    front = pareto.recorded(parent, trials)
    assert main(["best", "digits_pareto", "--pareto", "--tracking-uri", store.uri]) == 0
    out = capsys.readouterr().out
    assert f"the Pareto front of val_acc max, model_params min, latency_ms min ({len(front)}" in out
    header, *rows = out.splitlines()[1:]
    assert header.split()[:6] == ["#", "trial", "val_acc", "model_params", "latency_ms", "test_acc"]
    assert [row.split()[1] for row in rows] == [t.trial_id for t in front]
    first = rows[0].split()
    assert first[2] == f"{front[0].value:.4f}"
    assert first[3] == f"{front[0].metrics['model_params']:,.0f}"
    assert "model.name=" in rows[0]

    assert main(["best", "digits_pareto", "--pareto", "--json", "--tracking-uri", store.uri]) == 0
    listed = json.loads(capsys.readouterr().out)["trials"]
    assert [row["trial_id"] for row in listed] == [t.trial_id for t in front]
    assert all(row["pareto"] and "latency_ms" in row["metrics"] for row in listed)


def test_the_pareto_plot_and_report_table(pareto_search, tmp_path):
    store, parent, trials, _ = pareto_search
    plots = {a.path for a in store.client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/pareto.png" in plots
    page = write_report(store.uri, "digits_pareto", tmp_path).read_text()
    front = pareto.recorded(parent, trials)
    assert f"Pareto front ({len(front)} of {len(trials)} trials)" in page
    assert 'id="pareto"' in page  # the plot, embedded
    table = page.split("<h2>Pareto front")[1].split("</table>")[0]
    assert table.count("<tr") == len(front) + 1


def test_best_pareto_on_a_single_metric_run_says_why(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = tmp_path / "one.yaml"
    spec.write_text("name: one\n")
    Experiment(uri, "one").start(spec, SearchTags())
    assert main(["best", "one", "--pareto", "--tracking-uri", uri]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after MLflow's own lines on a new store
    assert last.startswith("tuner: error: run ")
    assert "searched on one metric: no Pareto front; give the spec `objectives:" in last
