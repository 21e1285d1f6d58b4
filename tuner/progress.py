"""What the terminal shows during a search: Ray's trial table, trimmed to the columns that say
something, and one line per trial as it finishes."""

from __future__ import annotations

from typing import Any

from ray import tune

from tuner import space as space_lang
from tuner.summary import short_value
from tuner.tracking import error_line, trial_status
from tuner.trainables import WARNINGS


def trial_table(metric: str, tree: space_lang.Group) -> tune.ProgressReporter:
    """Tune's periodic table: the metric, epochs run, and the parameters every trial has."""
    sampled = space_lang.sampled_keys(tree, common_only=True)
    return tune.CLIReporter(
        metric_columns={metric: metric, "training_iteration": "epochs"},
        parameter_columns={key.replace(".", "/"): key for key in sampled},
        max_report_frequency=15,
        sort_by_metric=True,  # Tune passes the metric and mode to the reporter itself
    )


class TrialLines(tune.Callback):
    """``trial 3f2a_00004 early_stopped: val_acc 0.9312 after 3 epochs | optimizer.sgd.lr=0.0021``

    Printed by the driver as each trial ends, so a long search shows steady progress between
    tables; and ``trial 3f2a_00004 warning: <text>`` for each warning a trial reports. Holds
    only plain values: Tune pickles its callbacks into the experiment state.
    """

    def __init__(self, metric: str, mode: str, space: space_lang.Group) -> None:
        self.metric = metric
        self.mode = mode
        self.space = space
        self.sampled = space_lang.sampled_keys(space)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        # A trial's warnings come in its results (see deep.Trial.warn): a worker's own stderr
        # reaches no one in CI, under nohup or `ray job submit`.
        for text in result.get(WARNINGS) or ():
            print(f"trial {trial.trial_id} warning: {text}", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(self.line(trial, trial_status(trial.last_result)), flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(self.line(trial, "errored"), flush=True)

    def line(self, trial: Any, status: str) -> str:
        best = trial.metric_analysis.get(self.metric, {}).get(self.mode)
        epochs = (trial.last_result or {}).get("training_iteration", 0)
        if status == "errored":
            outcome = error_line(trial)
        elif status == "rejected":
            outcome = str(trial.last_result["rejected"])
        elif best is None:
            outcome = f"no {self.metric} reported"
        else:
            outcome = f"{self.metric} {best:.4f} after {epochs} epoch{'s' * (epochs != 1)}"
        params = space_lang.trial_params(self.space, trial.config)
        shown = [key for key in self.sampled if key in params]
        config = "  ".join(f"{key}={short_value(str(params[key]))}" for key in shown)
        return f"trial {trial.trial_id} {status}: {outcome} | {config}"
