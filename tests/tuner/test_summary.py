"""The closing summary and `tuner best` of a big search stay one screen."""

from __future__ import annotations

import numpy as np

from tests.helpers import summary_of
from tuner.reading.summary import FRONT_SHOWN, TOP, print_pareto, print_summary
from tuner.tracking.records import TrialRecord
from tuner.tracking.tags import Status
from tuner.trainables.size import ModelSize

SCREEN = 24  # rows of a default terminal
PARAMS = {"lr": "0.001234", "width": "64", "optimizer": "adamw", "dropout": "0.25"}


def _trials(count: int, front: int = 0) -> list[TrialRecord]:
    """``count`` trials, best first (as MLflow ranks them), the first ``front`` on the front."""
    values = np.sort(np.random.default_rng(0).uniform(size=count))[::-1]
    statuses = (Status.COMPLETED, Status.EARLY_STOPPED, Status.DIVERGED, Status.ERRORED)
    return [
        TrialRecord(
            f"a1b2c_{i:05d}",
            f"run{i}",
            statuses[i % len(statuses)],
            float(value),
            9,
            PARAMS,
            i == 0,
            {"model_params": float(1000 + i)},
            pareto=i < front,
        )
        for i, value in enumerate(values)
    ]


def test_the_closing_summary_of_a_thousand_trials_is_one_screen(capsys):
    trials = _trials(1000, front=40)
    summary = summary_of(
        trials,
        experiment="big",
        test_metrics={"test_acc": 0.9, "test_f1": 0.89},
        model_size=ModelSize(params=650, mb=0.01),
        model_uri="models:/big/1",
        sampled=list(PARAMS),
    )
    print_summary(summary)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= SCREEN
    assert lines[1].startswith(f"Top {TOP} of 1000 trials (250 completed, 250 diverged")
    assert sum(trial.trial_id in line for line in lines for trial in trials) == TOP + 1  # + best


def test_a_long_pareto_front_shows_its_first_rows_and_says_where_the_rest_are(capsys):
    front = [t for t in _trials(1000, front=60) if t.pareto]
    parent = {"run_id": "p", "sampled": list(PARAMS)}
    print_pareto("big", parent, [("val_acc", "max"), ("model_params", "min")], front)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 1 + FRONT_SHOWN + 1 <= SCREEN  # title, head, rows, the rest
    assert "(60 trials;" in lines[0]
    assert lines[-1] == (
        f"... and {60 - FRONT_SHOWN} more on the front: "
        "python -m tuner best big --pareto --json lists them all"
    )
    print_pareto("big", parent, [("val_acc", "max"), ("model_params", "min")], front[:5])
    assert len(capsys.readouterr().out.splitlines()) == 1 + 1 + 5  # a short front: all of it
