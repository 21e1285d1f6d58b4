"""Plain-text tables printed at the end of `tuner run` and by `tuner best`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tuner.results import TrialRecord
from tuner.runner import Summary, TrialRow

TOP = 5


def _params_text(params: Mapping[str, Any]) -> str:
    return "  ".join(f"{key}={_short(value)}" for key, value in params.items())


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(
    metric: str, rows: Sequence[tuple[str, float | None, int, str, Mapping[str, Any]]]
) -> str:
    lines = [f"{'#':>2}  {'trial':<12}{metric:>10}{'epochs':>8}  {'status':<14}config"]
    for rank, (trial_id, value, epochs, status, params) in enumerate(rows, 1):
        shown = "-" if value is None else f"{value:.4f}"
        lines.append(
            f"{rank:>2}  {trial_id:<12}{shown:>10}{epochs:>8}  {status:<14}{_params_text(params)}"
        )
    return "\n".join(lines)


def print_summary(summary: Summary) -> None:
    """The top trials, the test metrics of the best one, and where everything was written."""
    top: list[TrialRow] = summary.trials[:TOP]
    statuses: dict[str, int] = {}
    for row in summary.trials:
        statuses[row.status] = statuses.get(row.status, 0) + 1
    print()
    print(
        f"Top {len(top)} of {len(summary.trials)} trials ("
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + "):"
    )
    print(
        _table(
            summary.metric, [(r.trial_id, r.best_value, r.epochs, r.status, r.params) for r in top]
        )
    )
    print()
    tests = "  ".join(f"{k}={v:.4f}" for k, v in summary.test_metrics.items())
    print(f"Best trial {summary.best.trial_id} on the test split: {tests}")
    print(
        f"MLflow: experiment {summary.experiment!r}, parent run {summary.parent_run_id}, "
        f"store {summary.tracking_uri}"
    )
    print(f"  browse: python -m tuner ui --tracking-uri {summary.tracking_uri}")
    print(
        f"  best:   python -m tuner best {summary.experiment} --tracking-uri {summary.tracking_uri}"
    )
    print(f"Ray Tune state and checkpoints: {summary.storage}")


def print_best(name: str, parent: Mapping[str, Any], trials: Sequence[TrialRecord]) -> None:
    metric = parent["metric"]
    print(f"Experiment {name!r}, run {parent['run_id']}:")
    headline = {k: v for k, v in parent["metrics"].items() if k.startswith(("best_", "test_"))}
    print("  " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(headline.items())))
    rows = [
        (t.trial_id, t.value, t.epochs, t.status + (" *" if t.best else ""), t.params)
        for t in trials
    ]
    print(_table(metric, rows))
