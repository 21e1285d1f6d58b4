"""The winner, repeated: `final.repeats` trains the top configs again with more seeds after a
real digits search and tests the best on average once per seed; `tuner repeat` does it later
from what MLflow holds."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from tests.helpers import new_store, tuner_run
from tuner.commands.cli import main
from tuner.conclusion.repeats import Spread
from tuner.spec.document import SpecError, load_spec
from tuner.tracking.records import latest_parent
from tuner.tracking.tags import TRUE, Tag, child_runs, repeat_runs

SPEC = """\
name: repeat_e2e
data: {dataset: digits, seed: 0}
search: {algorithm: random, num_samples: 3, seed: 0}
scheduler: {type: fifo, max_epochs: 2}
resources: {cpu: 1}
final: {repeats: 3, top_k: 2}
space:
  model: {name: simple_cnn, width: 8, depth: 2}
  optimizer: {name: adam, lr: {loguniform: [1e-3, 3e-2]}}
  batch_size: 32
"""


def test_spread_of_three_values_by_hand():
    spread = Spread((1.0, 2.0, 3.0))
    t = 4.302653  # Student's t, 97.5% quantile, 2 degrees of freedom (from a table)
    assert (spread.mean, spread.std) == (2.0, 1.0)
    assert spread.interval() == pytest.approx((2 - t / math.sqrt(3), 2 + t / math.sqrt(3)))
    half = t * math.sqrt(1 + 1 / 3)  # one more value: wider than the mean's interval
    assert spread.prediction_interval() == pytest.approx((2 - half, 2 + half))
    assert spread.metrics("test_acc")["test_acc_ci95_high"] == pytest.approx(2 + t / math.sqrt(3))
    assert str(spread) == "2.0000 ± 1.0000 (3 seeds)"


def test_an_accuracys_intervals_stay_within_0_and_1():
    near_perfect = (0.99, 1.0, 1.0)  # few seeds near 100%: Student's t reaches past it
    assert Spread(near_perfect).interval()[1] > 1
    spread = Spread.of("test_acc", near_perfect)
    assert spread.interval() == pytest.approx((Spread(near_perfect).interval()[0], 1.0))
    assert spread.prediction_interval()[1] == 1.0
    assert spread.metrics("test_acc")["test_acc_ci95_high"] == 1.0
    assert Spread.of("val_loss", (2.0, 4.0)).interval()[1] > 4  # a loss has no such bound


def test_top_k_without_repeats_is_refused_naming_the_override(tmp_path, capsys):
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(SPEC.replace("final: {repeats: 3, top_k: 2}", "final: {top_k: 2}"))
    with pytest.raises(SpecError, match=rf"^{spec_path}: final: top_k \(2\) .* set repeats >= 2"):
        load_spec(spec_path)
    assert main(["run", str(spec_path), "--set", "final.top_k=3"]) == 2
    assert "--set final.top_k=3: final: top_k (3)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def repeated(ray_session, tmp_path_factory):
    store = new_store(tmp_path_factory, "repeat")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        tuner_run(store, SPEC)
    parent = latest_parent(store.client, "repeat_e2e")
    ids = (parent.info.experiment_id, parent.info.run_id)
    trials, repeats = child_runs(store.client, *ids), repeat_runs(store.client, *ids)
    return store, parent, trials, repeats, printed.getvalue()


def test_the_top_two_configs_are_repeated_with_three_seeds_as_child_runs(repeated):
    _, parent, trials, repeats, _ = repeated
    assert len(trials) == 3  # repeats are not trials: tables and plots count the search's
    by_trial: dict[str, list] = {}
    for run in repeats:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        by_trial.setdefault(run.data.tags[Tag.TRIAL_ID], []).append(run)
    assert len(by_trial) == 2
    ranked = sorted(trials, key=lambda r: -r.data.metrics["final_val_acc"])
    assert set(by_trial) == {r.data.tags[Tag.TRIAL_ID] for r in ranked[:2]}
    for trial_id, runs in by_trial.items():
        assert sorted(r.data.tags[Tag.SEED] for r in runs) == ["0", "1", "2"]
        trial = next(t for t in trials if t.data.tags[Tag.TRIAL_ID] == trial_id)
        assert {r.data.params["optimizer.lr"] for r in runs} == {trial.data.params["optimizer.lr"]}
        # Seed 0 is the search's own: the repeat trains as the trial did, to the same value.
        seed0 = next(r for r in runs if r.data.tags[Tag.SEED] == "0")
        assert seed0.data.metrics["val_acc"] == pytest.approx(trial.data.metrics["final_val_acc"])


def test_the_best_mean_is_chosen_tested_once_per_seed_and_recorded(repeated):
    _, parent, trials, repeats, printed = repeated
    chosen = [r for r in repeats if r.data.tags[Tag.CHOSEN] == TRUE]
    others = [r for r in repeats if r.data.tags[Tag.CHOSEN] == "false"]
    assert len(chosen) == len(others) == 3
    assert all("test_acc" in r.data.metrics for r in chosen)
    assert not any("test_acc" in r.data.metrics for r in others)  # never tested
    val = [r.data.metrics["val_acc"] for r in chosen]
    assert np.mean(val) >= np.mean([r.data.metrics["val_acc"] for r in others])
    (best,) = [t for t in trials if t.data.tags.get(Tag.BEST) == TRUE]
    assert best.data.tags[Tag.TRIAL_ID] == chosen[0].data.tags[Tag.TRIAL_ID]
    test = [r.data.metrics["test_acc"] for r in chosen]
    metrics = parent.data.metrics
    assert metrics["test_acc_mean"] == pytest.approx(np.mean(test))
    assert metrics["test_acc_std"] == pytest.approx(np.std(test, ddof=1))
    assert metrics["val_acc_mean"] == pytest.approx(np.mean(val))
    low, high = metrics["test_acc_ci95_low"], metrics["test_acc_ci95_high"]
    assert low <= metrics["test_acc_mean"] <= high
    # the parent's test_acc (and registered model) is the search's own seed's
    seed0 = next(r for r in chosen if r.data.tags[Tag.SEED] == "0")
    assert metrics["test_acc"] == seed0.data.metrics["test_acc"]
    spread = f"{metrics['test_acc_mean']:.4f} ± {metrics['test_acc_std']:.4f} (3 seeds)"
    assert f"test_acc {spread}" in printed
    assert "Top 2 configs, 3 seeds each; * = chosen:" in printed


def test_tuner_repeat_reproduces_the_recorded_test_acc_from_mlflow(repeated, capsys):
    store, parent, _, before, _ = repeated
    argv = ["repeat", "repeat_e2e", "--seeds", "2", "--tracking-uri", store.uri]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"recorded test_acc {parent.data.metrics['test_acc']:.4f}: reproduced" in out
    after = repeat_runs(store.client, parent.info.experiment_id, parent.info.run_id)
    assert len(after) == len(before) + 2
    # A recorded value the seeds can't give is reported as such, with exit 1.
    store.client.log_metric(parent.info.run_id, "test_acc", 0.1)
    assert main(argv) == 1
    assert "recorded test_acc 0.1000: NOT reproduced" in capsys.readouterr().out


def test_tuner_repeat_again_adds_a_set_with_new_seeds_keeping_the_first_sets_spread(repeated):
    store, parent, _, first_set, _ = repeated
    ids = (parent.info.experiment_id, parent.info.run_id)
    before = repeat_runs(store.client, *ids)
    history = store.client.get_metric_history(parent.info.run_id, "test_acc_mean")
    argv = ["repeat", "repeat_e2e", "--seeds", "2", "--tracking-uri", store.uri]
    assert main(argv) in (0, 1)  # reproduced or not: a verdict, not an error
    added = [
        r
        for r in repeat_runs(store.client, *ids)
        if r.info.run_id not in {b.info.run_id for b in before}
    ]
    seeds = {int(r.data.tags[Tag.SEED]) for r in added}
    assert len(seeds) == 2 and min(seeds) > max(int(r.data.tags[Tag.SEED]) for r in before)
    after = store.client.get_metric_history(parent.info.run_id, "test_acc_mean")
    assert sorted(m.step for m in after) == list(range(len(history) + 1))  # one more set
    # the search's own set (step 0) is still there, as its seeds' mean
    chosen = [r for r in first_set if r.data.tags[Tag.CHOSEN] == TRUE]
    (step0,) = [m for m in after if m.step == 0]
    assert step0.value == pytest.approx(np.mean([r.data.metrics["test_acc"] for r in chosen]))
    newest = store.client.get_run(parent.info.run_id).data.metrics["test_acc_mean"]
    assert newest == pytest.approx(np.mean([r.data.metrics["test_acc"] for r in added]))


def test_tuner_repeat_needs_two_seeds(capsys):
    assert main(["repeat", "anything", "--seeds", "1"]) == 2
    assert "a spread needs at least 2 seeds" in capsys.readouterr().err
