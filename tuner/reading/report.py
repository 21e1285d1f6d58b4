"""Reports read back from the MLflow store alone: an HTML page per run, and two runs compared.

The HTML report is one self-contained file (inline CSS, plots embedded as base64 PNGs, the
trials CSV as a data: link, no scripts), so it opens offline and can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import math
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tuner.conclusion import pareto
from tuner.core.secrets import mask_secrets
from tuner.core.terminal import short_value
from tuner.reading.summary import FRONT_SHOWN
from tuner.tracking.records import TrialRecord, latest_parent, trials_of
from tuner.tracking.tags import SearchTags, Status, Tag

STATUSES = (  # (tag value, what the report calls it)
    (Status.COMPLETED, "completed"),
    (Status.EARLY_STOPPED, "stopped early (by ASHA or the time budget)"),
    (Status.DIVERGED, "diverged (NaN/inf loss)"),
    (Status.REJECTED, "rejected by constraints"),
    (Status.ERRORED, "errored"),
)
PLOT_ORDER = (  # the plots tuner.publishing.artifacts logs, in reading order; any others follow
    "confusion_matrix",
    "learning_curves",
    "anytime",
    "pareto",
    "optuna_history",
    "optuna_importances",
    "optuna_parallel_coordinate",
    "optuna_slice",
)
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid
#ddd; } table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #eef7ee; font-weight: 600; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; border: 1px solid #e4e4e4; }
figure { margin: 1em 0; } figcaption { color: #555; }
img { max-width: 100%; border: 1px solid #eee; }
.scroll { overflow-x: auto; max-width: 100%; }
.meta { color: #555; }
"""


def write_report(
    tracking_uri: str, experiment_name: str, out_dir: str | Path, *, top_k: int = 10
) -> Path:
    """Write ``<out_dir>/<experiment>.html`` for the experiment's latest run; return its path."""
    client = MlflowClient(tracking_uri)
    parent = latest_parent(client, experiment_name)
    trials = trials_of(client, parent)
    with tempfile.TemporaryDirectory() as tmp:
        files = _download(client, parent.info.run_id, Path(tmp))
        page = _page(client, parent, trials, files, top_k=top_k)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', experiment_name)}.html"
    path.write_text(page, encoding="utf-8")
    return path


def _download(client: MlflowClient, run_id: str, directory: Path) -> dict[str, Path]:
    """The run's spec, plots and results artifacts, by artifact path (missing ones skipped)."""
    files: dict[str, Path] = {}
    for folder in ("spec", "plots", "results"):
        if not client.list_artifacts(run_id, folder):
            continue
        local = Path(client.download_artifacts(run_id, folder, str(directory)))
        files.update({f"{folder}/{p.name}": p for p in sorted(local.iterdir()) if p.is_file()})
    return files


# ---------------------------------------------------------------------------------------------
# The HTML page
# ---------------------------------------------------------------------------------------------


def _spec_block(key: str, path: Path) -> str:
    # Masked again: runs recorded before tuner masked its spec artifact hold it as written.
    text = mask_secrets(path.read_text(errors="replace"))
    return f"<p>{html.escape(key)}</p><pre>{html.escape(text)}</pre>"


def _page(
    client: MlflowClient,
    parent: Run,
    trials: Sequence[TrialRecord],
    files: Mapping[str, Path],
    *,
    top_k: int,
) -> str:
    tags, info = parent.data.tags, parent.info
    name = html.escape(client.get_experiment(info.experiment_id).name)
    sections = [
        f"<h1>{name}</h1>",
        f'<p class="meta">{html.escape(_run_line(parent))}</p>',
        "<h2>Trials</h2>",
        _table(["status", "trials"], _status_rows(trials)),
        "<h2>Metrics of the best trial</h2>",
        _table(["metric", "value"], sorted(parent.data.metrics.items(), key=_metric_order)),
        "<h2>Best config</h2>",
        _table(["parameter", "value"], _best_config(parent).items()),
        f"<h2>Top {min(top_k, len(trials))} of {len(trials):,} trials</h2>",
        _top_table(parent, trials, top_k),
        _csv_link(files.get("results/trials.csv")),
        _front_table(parent, trials),
        "<h2>Plots</h2>",
        *(_figure(key, path) for key, path in _plots(files)),
        "<h2>Spec</h2>",
        *(_spec_block(key, path) for key, path in files.items() if key.startswith("spec/")),
        _model_line(client, info.run_id),
    ]
    title = f"tuner report: {name}"
    body = "\n".join(s for s in sections if s)
    if tags.get(Tag.ERROR):
        body += f"<h2>Error</h2><pre>{html.escape(tags[Tag.ERROR])}</pre>"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _run_line(parent: Run) -> str:
    info, tags, search = parent.info, parent.data.tags, SearchTags.of(parent)
    start = datetime.fromtimestamp(info.start_time / 1000, tz=timezone.utc)
    took = f", {(info.end_time - info.start_time) / 1000:.0f} s" if info.end_time else ""
    return (
        f"run {info.run_id} ({tags.get(Tag.STATUS, info.status.lower())}), "
        f"started {start:%Y-%m-%d %H:%M} UTC{took}; selected on {search.metric} "
        f"({search.mode}); spec {search.spec or '?'}"
    )


def _status_rows(trials: Sequence[TrialRecord]) -> list[tuple[str, int]]:
    counts = Counter(t.status for t in trials)
    rows = [(label, counts.pop(status, 0)) for status, label in STATUSES]
    rows += sorted(counts.items())  # running / interrupted / unknown, if any
    return [*rows, ("total", len(trials))]


def _metric_order(item: tuple[str, float]) -> tuple[int, str]:
    key = item[0]
    return (0 if key.startswith("best_") else 1 if key.startswith("test_") else 2, key)


def _best_config(parent: Run) -> dict[str, str]:
    params = sorted(parent.data.params.items())
    return {k.removeprefix("best."): short_value(v) for k, v in params if k.startswith("best.")}


def _sampled(parent: Run, trials: Sequence[TrialRecord]) -> list[str]:
    return list(SearchTags.of(parent).sampled) or sorted({k for t in trials for k in t.params})


def _top_table(parent: Run, trials: Sequence[TrialRecord], top_k: int) -> str:
    metric = SearchTags.of(parent).metric
    keys = _sampled(parent, trials)
    head = ["#", "trial", f"best {metric}", "epochs", "status", *keys]
    rows = [
        [i, t.trial_id, t.value, t.epochs, t.status + (" (best)" if t.best else "")]
        + [short_value(t.params.get(k, "")) for k in keys]
        for i, t in enumerate(trials[:top_k], 1)
    ]
    best = [t.best for t in trials[:top_k]]
    return _table(head, rows, highlight=best)


def _front_table(parent: Run, trials: Sequence[TrialRecord]) -> str:
    """A multi-objective search's Pareto front: objectives, test accuracy (measured after the
    search, never used to choose), status and config; "" for a search on one metric."""
    objectives = SearchTags.of(parent).objectives
    if not objectives:
        return ""
    front = pareto.recorded(parent, trials)
    names = [name for name, _ in objectives[1:]]
    keys = _sampled(parent, trials)
    head = ["trial", f"best {objectives[0][0]}", *names, "test_acc", "status", *keys]
    shown = front[:FRONT_SHOWN]
    rows = [
        [t.trial_id, t.value, *(t.metrics.get(n) for n in [*names, "test_acc"]), t.status]
        + [short_value(t.params.get(k, "")) for k in keys]
        for t in shown
    ]
    goals = ", ".join(f"{name} {mode}" for name, mode in objectives)
    rest = len(front) - len(shown)
    more = f"<p>... and {rest} more: the CSV's <code>pareto</code> column marks them all</p>"
    return (
        f"<h2>Pareto front ({len(front)} of {len(trials):,} trials)</h2><p>{html.escape(goals)}; "
        "test_acc of each member's best checkpoint, measured after the search</p>"
        + _table(head, rows, highlight=[t.best for t in shown])
        + (more if rest else "")
    )


def _table(
    head: Sequence[str], rows: Iterable[Sequence[object]], *, highlight: Sequence[bool] = ()
) -> str:
    cells = ["<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        marked = ' class="best"' if i < len(highlight) and highlight[i] else ""
        cells.append(f"<tr{marked}>" + "".join(_cell(v) for v in row) + "</tr>")
    # A wide table (a search of many parameters) scrolls inside the page, not the page itself.
    return '<div class="scroll"><table>\n' + "\n".join(cells) + "\n</table></div>"


def _cell(value: object) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f'<td class="num">{html.escape(_number(value))}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _number(value: float) -> str:
    """Counts with thousands separators, scores to 4 decimals, small values in e-notation."""
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and value > 100):
        return f"{int(value):,}"
    if value == 0 or not math.isfinite(value) or abs(value) >= 1e-2:
        return f"{value:.4f}"
    return f"{value:.3e}"


def _plots(files: Mapping[str, Path]) -> list[tuple[str, Path]]:
    plots = {k[len("plots/") :].removesuffix(".png"): p for k, p in files.items()}
    plots = {k: p for k, p in plots.items() if p.suffix == ".png" and "/" not in k}
    order = [k for k in PLOT_ORDER if k in plots] + sorted(set(plots) - set(PLOT_ORDER))
    return [(k, plots[k]) for k in order]


def _figure(name: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(name.replace("_", " "))
    return (
        f'<figure id="{html.escape(name)}"><img alt="{caption}" '
        f'src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'
    )


def _csv_link(path: Path | None) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<p><a download="trials.csv" href="data:text/csv;base64,{data}">'
        "all trials as CSV</a> (one row per trial, every parameter)</p>"
    )


def _model_line(client: MlflowClient, run_id: str) -> str:
    try:
        versions = client.search_model_versions(f"run_id = '{run_id}'")
    except Exception:  # a store without a registry: nothing to say
        return ""
    if not versions:
        return ""
    v = max(versions, key=lambda v: int(v.version))
    return (
        "<h2>Model</h2>"
        f"<p>registered as <code>{html.escape(v.name)}</code> version {v.version}: "
        f"<code>mlflow.pyfunc.load_model(&quot;models:/{html.escape(v.name)}/"
        f"{v.version}&quot;)</code> or <code>python -m tuner predict "
        f"{html.escape(v.name)} IMAGE...</code></p>"
    )


# ---------------------------------------------------------------------------------------------
# Two experiments side by side
# ---------------------------------------------------------------------------------------------


def compare(tracking_uri: str, name1: str, name2: str) -> str:
    """Two experiments' latest runs as a plain-text table: best configs, then metrics."""
    client = MlflowClient(tracking_uri)
    runs = [latest_parent(client, name) for name in (name1, name2)]
    configs = [_best_config(run) for run in runs]
    metrics = [run.data.metrics for run in runs]
    rows: list[tuple[str, str, str]] = [("", name1, name2), ("run", *(r.info.run_id for r in runs))]
    rows.append(("trials", *(str(len(trials_of(client, r))) for r in runs)))
    rows.append(("selected on", *(SearchTags.of(r).metric for r in runs)))
    rows.append(("-- best config", "", ""))
    for key in _union(configs):
        rows.append((key, *(c.get(key, "-") for c in configs)))
    rows.append(("-- metrics", "", ""))
    for key, _ in sorted(((k, 0.0) for k in _union(metrics)), key=_metric_order):
        rows.append((key, *(_number(m[key]) if key in m else "-" for m in metrics)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _union(mappings: Iterable[Mapping[str, object]]) -> list[str]:
    return sorted({key for mapping in mappings for key in mapping})


__all__ = ["compare", "write_report"]
