"""Choosing the best trial (tuner.core.selection): by its last epochs, not one lucky epoch; the
driver's ranking (Tune's results) and the reading side (MLflow, `tuner best`) agree; the
closing summary says when the split's noise can't rank the top trials; and on a small split
an unset final.repeats repeats the tied configs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from ray.tune import Result
from ray.tune.experiment import Trial

from tests.helpers import summary_of
from tuner.commands import run as runner
from tuner.core.selection import final_value, interval, tied
from tuner.reading.summary import Summary, noise_line
from tuner.search.recorder import TrialRecorder
from tuner.spec import space as space_lang
from tuner.spec.document import SpecError, validate
from tuner.tracking.experiment import Experiment
from tuner.tracking.records import TrialRecord, trials_of
from tuner.tracking.tags import SearchTags, Status

# Digits' validation split: 288 images. "spike" is issue 31's winner: 1.0000 at one epoch, then
# ~0.993; "steady" ends higher. "stopped": ASHA stopped it after 3 epochs.
HISTORIES = {
    "spike": [0.95, 1.0, 0.9931, 0.9896, 0.9896],
    "steady": [0.95, 0.9861, 0.9931, 0.9931, 0.9965],
    "stopped": [0.90, 0.96, 0.97],
}
SPACE = {"model": {"name": "simple_cnn", "width": {"int": [8, 64]}}}


def spec_of(**extra: object) -> object:
    return validate({"name": "selection", "space": SPACE, **extra}, "test")


def tune_result(trial_id: str, history: list[float], metric: str = "val_acc") -> Result:
    """A finished trial as Tune's ResultGrid hands it to the driver."""
    frame = pd.DataFrame({metric: history, "training_iteration": range(1, len(history) + 1)})
    config = {"model": {"name": "simple_cnn", "width": 8 + len(trial_id)}}
    metrics = {metric: history[-1], "training_iteration": len(history), "trial_id": trial_id}
    return Result(
        metrics={**metrics, "config": config},
        checkpoint=None,
        error=None,
        path=f"/nowhere/{trial_id}",
        metrics_dataframe=frame,
    )


def test_a_one_epoch_spike_loses_to_a_steadier_trial():
    assert max(HISTORIES["spike"]) > max(HISTORIES["steady"])  # the old rule chose the spike
    assert final_value(HISTORIES["steady"]) > final_value(HISTORIES["spike"])
    ranked = runner._ranked([tune_result(k, h) for k, h in HISTORIES.items()], spec_of())
    assert [runner._trial_id(r) for r in ranked] == ["steady", "spike", "stopped"]


def test_min_mode_ranks_the_lowest_final_value_first_and_a_diverged_end_last():
    losses = {"spike": [0.5, 0.01, 0.3, 0.3], "steady": [0.5, 0.2, 0.2, 0.2], "nan": [0.2, 0.1]}
    losses["nan"].append(float("inf"))  # its last epoch diverged: its weights are useless
    results = [tune_result(k, h, "val_loss") for k, h in losses.items()]
    ranked = runner._ranked(results, spec_of(metric="val_loss"))
    assert [runner._trial_id(r) for r in ranked] == ["steady", "spike", "nan"]


def test_the_driver_and_mlflow_rank_the_trials_alike(tmp_path: Path):
    experiment = Experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "agree")
    (tmp_path / "spec.yaml").write_text("name: agree\n")
    experiment.start(tmp_path / "spec.yaml", SearchTags(metric="val_acc", mode="max"))
    ids = (experiment.tracking_uri, experiment.experiment_id, experiment.parent_id)
    recorder = TrialRecorder(*ids, "val_acc", "max", space_lang.parse(SPACE))
    recorder.setup()
    trials = {k: Trial("train", stub=True, trial_id=k, config={}) for k in HISTORIES}
    for trial in trials.values():
        recorder.on_trial_start(iteration=0, trials=list(trials.values()), trial=trial)
    for trial_id, history in HISTORIES.items():
        for step, value in enumerate(history, 1):
            result = {"training_iteration": step, "epochs": 5, "val_acc": value}
            recorder.on_trial_result(
                iteration=step, trials=list(trials.values()), trial=trials[trial_id], result=result
            )
    recorder.on_experiment_end(trials=list(trials.values()))

    read = trials_of(experiment.client, experiment.client.get_run(experiment.parent_id))
    ranked = runner._ranked([tune_result(k, h) for k, h in HISTORIES.items()], spec_of())
    assert [t.trial_id for t in read] == [runner._trial_id(r) for r in ranked]
    for record, result in zip(read, ranked, strict=True):
        assert record.value == pytest.approx(runner._final_value(result, spec_of()))


def test_wilsons_interval_holds_issue_31s_two_images_apart():
    low, high = interval(1.0, 288)
    assert high == 1.0 and low < 0.9931  # 1.0000 and 0.9931 can't be told apart on 288
    assert tied([1.0, 0.9931, 0.97], 288) == 2
    assert tied([1.0, 0.9931], 100_000) == 1  # a large split tells them apart


def _summary(values: list[float], val_images: int) -> Summary:
    trials = [
        TrialRecord(f"t{i}", f"r{i}", Status.COMPLETED, v, 20, {}, i == 0, {})
        for i, v in enumerate(values)
    ]
    return summary_of(trials, val_images=val_images)


def test_the_summary_says_when_the_top_trials_are_within_the_splits_noise():
    line = noise_line(_summary([0.9965, 0.9931, 0.9896, 0.95], 288), 288)
    assert line is not None
    assert line.startswith("The top 3 trials are within the validation split's noise")
    assert "on 288 images" in line and "final.repeats" in line
    assert noise_line(_summary([0.9965, 0.95], 288), 288) is None  # a clear winner
    assert noise_line(_summary([0.9965, 0.9931], 100_000), 100_000) is None


def test_an_unset_final_repeats_repeats_the_tied_configs_on_a_small_split():
    assert spec_of().final.repeats is None
    ranked = runner._ranked([tune_result(k, h) for k, h in HISTORIES.items()], spec_of())
    assert runner._repeats_of(spec_of(), ranked, 288) == (3, 2)  # steady and spike tie
    assert runner._repeats_of(spec_of(), ranked, 5000) == (1, 1)  # a split that can rank them
    explicit = spec_of(final={"repeats": 1})
    assert runner._repeats_of(explicit, ranked, 288) == (1, 1)  # the spec's value is kept
    assert runner._repeats_of(spec_of(final={"repeats": 4}), ranked, 288) == (4, 1)
    with pytest.raises(SpecError, match="top_k"):  # top_k alone still asks for repeats
        spec_of(final={"top_k": 3})
