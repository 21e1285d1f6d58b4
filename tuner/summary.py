"""Plain-text tables printed at the end of `tuner run` and by `tuner best` (both from MLflow)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from tuner.results import TrialRecord
from tuner.runner import Summary

TOP = 5


def trials_table(
    metric: str, trials: Sequence[TrialRecord], keys: Sequence[str] | None = None
) -> str:
    """Rank, trial id, best metric value, epochs run, status, and the config (``keys`` only)."""
    lines = [f"{'#':>2}  {'trial':<12}{metric:>10}{'epochs':>8}  {'status':<16}config"]
    for rank, trial in enumerate(trials, 1):
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        status = trial.status + (" *" if trial.best else "")
        params = {k: v for k, v in trial.params.items() if keys is None or k in keys}
        config = "  ".join(f"{key}={_short(value)}" for key, value in params.items())
        lines.append(
            f"{rank:>2}  {trial.trial_id:<12}{value:>10}{trial.epochs:>8}  {status:<16}{config}"
        )
    return "\n".join(lines)


def _short(text: str) -> str:
    # MLflow keeps params as strings: shorten long floats (0.0021856...) for the table.
    try:
        number = float(text)
    except ValueError:
        return text
    return text if number.is_integer() or len(text) <= 8 else f"{number:.4g}"


def print_summary(summary: Summary) -> None:
    """The top trials, the test metrics of the best one, and where everything was written."""
    counts = Counter(trial.status for trial in summary.trials)
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    top = summary.trials[:TOP]
    print(f"\nTop {len(top)} of {len(summary.trials)} trials ({statuses}); * = best:")
    print(trials_table(summary.metric, top, summary.sampled))
    tests = "  ".join(f"{k}={v:.4f}" for k, v in summary.test_metrics.items())
    print(f"\nBest trial {summary.best_trial_id} on the test split: {tests}")
    uri = summary.tracking_uri
    print(f"MLflow: experiment {summary.experiment!r}, run {summary.parent_run_id}, store {uri}")
    print(f"  browse: python -m tuner ui --tracking-uri {uri}")
    print(f"  best:   python -m tuner best {summary.experiment} --tracking-uri {uri}")
    print(f"Ray Tune state and checkpoints: {summary.storage}")


def print_best(name: str, parent: Mapping[str, Any], trials: Sequence[TrialRecord]) -> None:
    print(f"Experiment {name!r}, run {parent['run_id']}:")
    headline = {k: v for k, v in parent["metrics"].items() if k.startswith(("best_", "test_"))}
    print("  " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(headline.items())))
    print(trials_table(parent["metric"], trials, parent["sampled"]))
