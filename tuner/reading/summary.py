"""Plain-text tables printed at the end of `tuner run` and by `tuner best` (both from MLflow)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuner.core.secrets import mask_secrets
from tuner.core.selection import interval, is_accuracy, tied
from tuner.tracking.records import TrialRecord
from tuner.tracking.store import is_server

if TYPE_CHECKING:  # imports torch and Ray, which `tuner best` does without
    from tuner.conclusion.repeats import Spread
    from tuner.trainables.size import ModelSize
from tuner.core.terminal import say, short_value

TOP = 5
# A front of many objectives over thousands of trials can hold dozens of trials: the closing
# summary, `tuner best --pareto` and the report show its first FRONT_SHOWN (one screen) and say
# where the rest are.
FRONT_SHOWN = 20


@dataclass
class Summary:
    """What a finished search produced and where it lives."""

    experiment: str
    tracking_uri: str
    artifacts: str  # the experiment's artifact location (plots, models, the spec)
    parent_run_id: str
    storage: str
    metric: str
    best_trial_id: str
    test_metrics: dict[str, float]
    model_size: ModelSize  # of the tested model
    retrained: bool  # final.retrain: the tested model was trained again on train+val
    model_uri: str | None  # models:/NAME/VERSION of the registered model; None: not exported
    trials: list[TrialRecord]
    sampled: list[str]  # the config keys the search varied, for the closing table
    test_spread: Spread | None = None  # final.repeats: test_acc over the chosen config's seeds
    val_images: int | None = None  # the validation split's size (the noise of its accuracy)


def trials_table(
    metric: str, trials: Sequence[TrialRecord], keys: Sequence[str] | None = None
) -> str:
    """Rank, trial id, final metric value (tuner.core.selection), epochs run, status, and the config
    (``keys`` only)."""
    lines = [f"{'#':>2}  {'trial':<12}{metric:>10}{'epochs':>8}  {'status':<16}config"]
    for rank, trial in enumerate(trials, 1):
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        status = trial.status + (" *" if trial.best else "")
        params = {k: v for k, v in trial.params.items() if keys is None or k in keys}
        config = "  ".join(f"{key}={short_value(value)}" for key, value in params.items())
        lines.append(
            f"{rank:>2}  {trial.trial_id:<12}{value:>10}{trial.epochs:>8}  {status:<16}{config}"
        )
    return "\n".join(lines)


def noise_line(summary: Summary, val_images: int) -> str | None:
    """A warning when the top trials' final values of an accuracy are inside the best one's
    95% interval on ``val_images`` images, so the split can't rank them (None: it can)."""
    values = [t.value for t in summary.trials if t.value is not None]
    count = tied(values, val_images) if is_accuracy(summary.metric) else 1
    if count < 2:
        return None
    low, high = interval(values[0], val_images)
    line = (
        f"The top {count} trials are within the validation split's noise: {summary.metric} "
        f"{low:.4f}..{high:.4f} is the 95% interval of the best's {values[0]:.4f} on "
        f"{val_images} images"
    )
    if summary.test_spread:
        return f"{line}; final.repeats chose among them by their mean over seeds."
    return f"{line}; final.repeats (with final.top_k) would choose among them by more seeds."


def print_summary(summary: Summary) -> None:
    """The top trials, the test metrics of the best one, and where everything was written."""
    counts = Counter(trial.status for trial in summary.trials)
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    top = summary.trials[:TOP]
    say(f"\nTop {len(top)} of {len(summary.trials)} trials ({statuses}); * = best:")
    say(trials_table(summary.metric, top, summary.sampled))
    if summary.val_images and (line := noise_line(summary, summary.val_images)):
        say(line)
    tests = "  ".join(f"{k}={v:.4f}" for k, v in summary.test_metrics.items())
    tested = "retrained on train+val" if summary.retrained else "last checkpoint"
    say(f"\nBest trial {summary.best_trial_id} ({tested}) on the test split: {tests}")
    if summary.test_spread:
        say(f"test_acc {summary.test_spread}")
    size = summary.model_size
    say(f"Its model: {size.params:,} parameters, {size.mb:.2f} MB")
    uri = mask_secrets(summary.tracking_uri)  # a terminal's scrollback is a record too
    say(f"MLflow: experiment {summary.experiment!r}, run {summary.parent_run_id}, store {uri}")
    say(f"  artifacts: {mask_secrets(summary.artifacts)}")
    browse = (
        f"{uri.rstrip('/')}/ (the server's UI)"
        if is_server(uri)
        else (f"python -m tuner ui {summary.experiment} --tracking-uri {uri}")
    )
    say(f"  browse: {browse}")
    say(f"  best:   python -m tuner best {summary.experiment} --tracking-uri {uri}")
    if any(trial.pareto for trial in summary.trials):
        say(f"  front:  python -m tuner best {summary.experiment} --pareto --tracking-uri {uri}")
    if summary.model_uri:
        predict = f"python -m tuner predict {summary.experiment} IMAGE... --tracking-uri {uri}"
        say(f"  model:  {summary.model_uri}; {predict}")
    say(f"Ray Tune state and checkpoints: {summary.storage}")


def pareto_table(
    objectives: Sequence[tuple[str, str]],
    trials: Sequence[TrialRecord],
    keys: Sequence[str] | None = None,
) -> str:
    """A front: each trial's objectives, the test accuracy of its best checkpoint (measured
    after the search, never used to choose), its status and config (``keys`` only)."""
    (metric, _), *costs = objectives
    names = [metric, *(name for name, _ in costs), "test_acc"]
    width = max(12, *map(len, names)) + 2
    head = f"{'#':>2}  {'trial':<12}" + "".join(f"{name:>{width}}" for name in names)
    lines = [f"{head}  {'status':<16}config"]
    for rank, trial in enumerate(trials, 1):
        values = [trial.value, *(trial.metrics.get(name) for name in names[1:])]
        cells = "".join(f"{_objective(value):>{width}}" for value in values)
        status = trial.status + (" *" if trial.best else "")
        params = {k: v for k, v in trial.params.items() if keys is None or k in keys}
        config = "  ".join(f"{key}={short_value(value)}" for key, value in params.items())
        lines.append(f"{rank:>2}  {trial.trial_id:<12}{cells}  {status:<16}{config}")
    return "\n".join(lines)


def _objective(value: float | None) -> str:
    """A count (parameters) with thousands separators, anything else to 4 decimals."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if value.is_integer() and abs(value) >= 100 else f"{value:.4f}"


def print_best(name: str, parent: Mapping[str, Any], trials: Sequence[TrialRecord]) -> None:
    say(f"Experiment {name!r}, run {parent['run_id']} (* = the trial chosen as best):")
    metrics = parent["metrics"]
    headline = {  # per-class accuracies (test_acc_per_class/...) stay in MLflow and the report
        k: v for k, v in metrics.items() if k.startswith(("best_", "test_")) and "/" not in k
    }
    say("  " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(headline.items())))
    if "model_params" in metrics:
        say(f"  model: {metrics['model_params']:,.0f} parameters, {metrics['model_mb']:.2f} MB")
    say(trials_table(parent["metric"], trials, parent["sampled"]))


def print_pareto(
    name: str,
    parent: Mapping[str, Any],
    objectives: Sequence[tuple[str, str]],
    front: Sequence[TrialRecord],
) -> None:
    goals = ", ".join(f"{objective} {mode}" for objective, mode in objectives)
    say(
        f"Experiment {name!r}, run {parent['run_id']}: the Pareto front of {goals} "
        f"({len(front)} trials; * = the trial chosen as best):"
    )
    say(pareto_table(objectives, front[:FRONT_SHOWN], parent["sampled"]))
    if len(front) > FRONT_SHOWN:
        say(
            f"... and {len(front) - FRONT_SHOWN} more on the front: "
            f"python -m tuner best {name} --pareto --json lists them all"
        )
