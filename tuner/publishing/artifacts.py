"""Plots and tables of a finished search, logged as artifacts of its parent MLflow run.

Everything is read back from MLflow (the child runs' params, tags and metric histories), so the
same code serves a search that just ended and one resumed after a crash. Each artifact is drawn
on its own: one that can't be drawn (too few trials for importances, a trainable that reports
no losses) is skipped with a warning, and nothing here ever fails the search.

On the parent run:

    plots/confusion_matrix.png        counts and row-normalised, class names on both axes
    plots/learning_curves.png         train/val loss and accuracy of the top-k trials (2x2)
    plots/anytime.png                 the best metric so far, against wall time and epochs trained
    plots/pareto.png                  with objectives: the metric against each cost, front marked
    plots/optuna_history.png          Optuna's own plots, rebuilt from the finished trials
    plots/optuna_importances.png
    plots/optuna_parallel_coordinate.png
    plots/optuna_slice.png
    results/confusion_matrix.json     {"classes": [...], "matrix": [[count, ...], ...]}
    results/trials.csv                one row per trial: id, status, best, pareto (with
                                      objectives), value, epochs, every param
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import matplotlib
import numpy as np
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tuner.conclusion import pareto
from tuner.core.errors import UsageError
from tuner.core.selection import final_key
from tuner.publishing.anytime import search_curve
from tuner.spec.document import recorded_space
from tuner.spec.space import Group
from tuner.tracking.records import TrialRecord, overrides_of, parsed_params, spec_of, trials_of
from tuner.tracking.tags import SearchTags
from tuner.trainables.metrics import Evaluation

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

PLOTS = "plots"
RESULTS = "results"
CURVES = (  # the 2x2 learning-curve panels: (metric, title), row by row
    ("train_loss", "train loss"),
    ("val_loss", "validation loss"),
    ("train_acc", "train accuracy"),
    ("val_acc", "validation accuracy"),
)
DPI = 110  # ~A4-width figures stay under ~150 kB each
MAX_ANNOTATED_CLASSES = 20  # above this, confusion-matrix cells are colour only (text unreadable)
LOG_SCALE_RATIO = 20.0  # a positive float param spanning more than this ratio is shown log-scale
OPTUNA_PLOTS = {  # artifact name -> function of optuna.visualization.matplotlib
    "optuna_history": "plot_optimization_history",
    "optuna_importances": "plot_param_importances",
    "optuna_parallel_coordinate": "plot_parallel_coordinate",
    "optuna_slice": "plot_slice",
}
# Plots of several parameters show only the most important few, in a figure as wide as the
# report's page (11 in at DPI 110: ~1200 px, the page's width, so text keeps its size).
FIGURE_WIDTH = 11.0  # inches
MOST_IMPORTANT = {  # artifact name -> (parameters shown, figure height in inches)
    "optuna_parallel_coordinate": (5, 5.0),  # one axis per parameter: ~2 in apart
    "optuna_slice": (4, 3.6),  # one panel per parameter: ~2.5 in wide
}
# A big search (thousands of trials) keeps its plots legible: past TOP_LINES trials, parallel
# coordinates colour only the best TOP_LINES and draw the rest as a faint grey density; the
# scatter plots' dots shrink with the count (about DOT_INK points^2 of dots in all, each between
# DOT_AREA) and turn translucent, so dense regions read as density, not as one blot.
TOP_LINES = 20
FAINT = (0.45, 0.45, 0.45)  # RGB of a line outside the top
# Its opacity: about FAINT_INK lines' worth of ink in all (0.06 each at 1,000 trials: ~15
# overlaps make a mid grey), within FAINT_ALPHA, so 10,000 lines stay a density, not a wall.
FAINT_INK = 60.0
FAINT_ALPHA = (1 / 255, 0.1)  # 1/255: the least opacity a PNG's 8 bits keep
DOT_INK = 20_000.0
DOT_AREA = (6.0, 40.0)  # points^2: ~2.5 px to Optuna's own ~7 px at DPI 110
MANY_DOTS = 200  # above this many trials, dots lose their edges and turn translucent


def log_search_artifacts(
    client: MlflowClient, parent_run_id: str, evaluation: Evaluation, *, top_k: int = 4
) -> None:
    """Log the confusion matrix, learning curves, Optuna plots and the trials CSV on the parent.

    ``evaluation`` is the best trial's test-split evaluation; ``top_k`` trials get learning
    curves. Problems become warnings: a search is never failed by its plots.
    """
    matplotlib.use("Agg")  # no display: draw to files only
    _attempt("confusion matrix", lambda: _log_confusion(client, parent_run_id, evaluation))
    found = _attempt("trials", lambda: _parent_and_trials(client, parent_run_id))
    if found is None:
        return
    parent, trials = found
    _attempt("trials CSV", lambda: _log_trials_csv(client, parent_run_id, parent, trials))
    _attempt("learning curves", lambda: _log_curves(client, parent, trials[:top_k]))
    _attempt("anytime curve", lambda: _log_anytime(client, parent))
    if SearchTags.of(parent).objectives:
        _attempt("Pareto plot", lambda: _log_pareto(client, parent, trials))
    study = _attempt("Optuna study", lambda: study_of(client, parent, trials))
    if study is None:
        return
    target = f"best {SearchTags.of(parent).metric}"
    # Ranked once: fANOVA takes ~0.5 s at 1,000 trials, and two plots need the order.
    order = _attempt("importance order", lambda: importance_order(study))
    for name in OPTUNA_PLOTS:
        _attempt(name, lambda n=name: _log_optuna(client, parent_run_id, study, n, target, order))


def _parent_and_trials(client: MlflowClient, run_id: str) -> tuple[Run, list[TrialRecord]]:
    parent = client.get_run(run_id)
    return parent, trials_of(client, parent)


def _attempt(what: str, step: Callable[[], Any]) -> Any:
    try:
        return step()
    except Exception as error:  # a plot must never fail the search
        warnings.warn(f"tuner: skipped the {what}: {error}", stacklevel=3)
        return None


def _save(client: MlflowClient, run_id: str, figure: Figure, name: str) -> None:
    import matplotlib.pyplot as plt

    try:
        client.log_figure(
            run_id, figure, f"{PLOTS}/{name}.png", save_kwargs={"dpi": DPI, "bbox_inches": "tight"}
        )
    finally:
        plt.close(figure)


# ---------------------------------------------------------------------------------------------
# Confusion matrix
# ---------------------------------------------------------------------------------------------


def confusion(evaluation: Evaluation) -> np.ndarray:
    """Counts (true class x predicted class), every class present even if never predicted."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(
        evaluation.y_true, evaluation.y_pred, labels=np.arange(len(evaluation.classes))
    )


def _log_confusion(client: MlflowClient, run_id: str, evaluation: Evaluation) -> None:
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    counts = confusion(evaluation)
    classes = list(evaluation.classes)
    client.log_dict(
        run_id,
        {"classes": classes, "matrix": counts.tolist(), "total": int(counts.sum())},
        f"{RESULTS}/confusion_matrix.json",
    )
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    n = len(classes)
    side = min(max(4.0, 0.45 * n + 2), 24.0)  # inches per panel: grows with the class count
    figure, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side), layout="constrained")
    annotate = n <= MAX_ANNOTATED_CLASSES
    rotate = 45 if max(len(c) for c in classes) > 3 else 0
    panels = ((counts, "d", "counts"), (normalised, ".2f", "row-normalised (recall per class)"))
    for ax, (matrix, fmt, title) in zip(axes, panels, strict=True):
        ConfusionMatrixDisplay(matrix, display_labels=classes).plot(
            ax=ax,
            cmap="Blues",
            colorbar=False,
            include_values=annotate,
            values_format=fmt,
            xticks_rotation=rotate,
        )
        ax.set_title(title)
    accuracy = evaluation.metrics["test_acc"]
    figure.suptitle(f"Test split: {int(counts.sum())} images, accuracy {accuracy:.4f}")
    _save(client, run_id, figure, "confusion_matrix")


# ---------------------------------------------------------------------------------------------
# Learning curves and the trials table
# ---------------------------------------------------------------------------------------------


def _log_curves(client: MlflowClient, parent: Run, trials: Sequence[TrialRecord]) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    histories = {
        trial.trial_id: {key: _finite_history(client, trial.run_id, key) for key, _ in CURVES}
        for trial in trials
    }
    if not any(len(steps) > 1 for h in histories.values() for steps, _ in h.values()):
        raise ValueError("no trial reported a metric over more than one epoch")
    metric = SearchTags.of(parent).metric
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True, layout="constrained")
    for ax, (key, title) in zip(axes.flat, CURVES, strict=True):
        for trial in trials:
            steps, values = histories[trial.trial_id][key]
            value = "?" if trial.value is None else f"{trial.value:.4f}"
            label = f"{trial.trial_id} ({metric} {value}, {trial.status})"
            ax.plot(steps, values, marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].legend(fontsize=8, title=f"top {len(trials)} trials")
    figure.suptitle(f"Learning curves of the {len(trials)} best trials")
    _save(client, parent.info.run_id, figure, "learning_curves")


def _log_anytime(client: MlflowClient, parent: Run) -> None:
    import matplotlib.pyplot as plt

    curve = search_curve(client, parent)
    if not curve:
        raise ValueError("no trial reported a finite metric")
    metric = SearchTags.of(parent).metric
    best = [point.best for point in curve]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, layout="constrained")
    for ax, xs, label in (
        (axes[0], [point.seconds for point in curve], "seconds since the search started"),
        (axes[1], [point.epochs for point in curve], "epochs trained, all trials together"),
    ):
        ax.step(xs, best, where="post")
        ax.set_xlim(left=0)  # from the start: the wait for the first result shows
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"best {metric} so far")
    figure.suptitle(
        f"Anytime curve: best {metric} {best[-1]:.4f}, {curve[-1].epochs} epochs trained in all"
    )
    _save(client, parent.info.run_id, figure, "anytime")


def _log_pareto(client: MlflowClient, parent: Run, trials: Sequence[TrialRecord]) -> None:
    """The metric against each cost, one panel per cost: every trained trial, the front
    (tuner.pareto) joined as a staircase, the best trial starred. Drawn here rather than with
    Optuna's plot_pareto_front: costs span decades (log axes), and 3 objectives stay 2-D."""
    import matplotlib.pyplot as plt

    objectives = SearchTags.of(parent).objectives
    (metric, _), *costs = objectives
    points = {t.trial_id: point for t in trials if (point := pareto.point(t, objectives))}
    if not points:
        raise ValueError("no trained trial reported every objective")
    shown = [t for t in trials if t.trial_id in points]
    front = [t for t in shown if t.pareto]
    figure, axes = plt.subplots(
        1, len(costs), figsize=(5.5 * len(costs), 4.2), squeeze=False, layout="constrained"
    )
    for ax, (cost, _) in zip(axes[0], costs, strict=True):
        xs = [t.metrics[cost] for t in shown]
        trials_drawn = ax.scatter(xs, [t.value for t in shown], color="0.6", s=18, label="trials")
        trials_drawn.set(**_dots(len(shown)))
        steps = sorted(front, key=lambda t: t.metrics[cost])
        ax.step(
            [t.metrics[cost] for t in steps],
            [t.value for t in steps],
            where="post",
            color="C3",
            marker="o",
            label=f"Pareto front ({len(front)})",
        )
        for t in shown:
            if t.best:
                ax.scatter([t.metrics[cost]], [t.value], marker="*", s=180, color="C2", zorder=3)
        if min(xs) > 0 and max(xs) / min(xs) > LOG_SCALE_RATIO:
            ax.set_xscale("log")
        ax.set_xlabel(f"{cost} (lower is better)")
        ax.set_ylabel(f"best {metric}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"{metric} against cost: {len(front)} of {len(shown)} trials on the front")
    _save(client, parent.info.run_id, figure, "pareto")


def _finite_history(client: MlflowClient, run_id: str, key: str) -> tuple[list[int], list[float]]:
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    points = [(m.step, m.value) for m in history if math.isfinite(m.value)]  # diverged: inf
    return [s for s, _ in points], [v for _, v in points]


def _log_trials_csv(
    client: MlflowClient, run_id: str, parent: Run, trials: Sequence[TrialRecord]
) -> None:
    search = SearchTags.of(parent)
    params = sorted({key for trial in trials for key in trial.params})
    front = ["pareto"] if search.objectives else []  # a front's members, for a big front
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    head = ["trial_id", "status", "best", *front, final_key(search.metric), "epochs"]
    writer.writerow([*head, *params, "run_id"])
    for trial in trials:
        value = "" if trial.value is None else repr(trial.value)
        marks = [str(trial.best).lower()] + ([str(trial.pareto).lower()] if front else [])
        row = [trial.trial_id, trial.status, *marks, value, trial.epochs]
        writer.writerow([*row, *(trial.params.get(p, "") for p in params), trial.run_id])
    client.log_text(run_id, buffer.getvalue(), f"{RESULTS}/trials.csv")


# ---------------------------------------------------------------------------------------------
# Optuna's plots, from a study rebuilt out of the MLflow child runs
# ---------------------------------------------------------------------------------------------


def study_of(client: MlflowClient, parent: Run, trials: Sequence[TrialRecord]) -> optuna.Study:
    """An in-memory Optuna study holding every trial of a parent run, in start order.

    Each trial holds its sampled parameters with the distributions the search drew them from:
    the space of the spec the parent recorded, translated as the searcher translates it, so a
    log-uniform range plots on a log axis because the spec said so. A run whose spec can't be
    read back gets distributions guessed from the values seen (``_guessed``). Trials without a
    value (errored before reporting) are recorded as failed.
    """
    import optuna

    search = SearchTags.of(parent)
    sampled = _sampled(client, parent, trials)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created" in logs
    try:
        study = optuna.create_study(
            study_name=parent.info.run_name,
            direction=search.objective.direction,
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    for trial in sorted(trials, key=lambda t: t.start_time):
        params, distributions = sampled[trial.run_id]
        finite = trial.value is not None and math.isfinite(trial.value)
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                value=trial.value if finite else None,
                state=optuna.trial.TrialState.COMPLETE if finite else optuna.trial.TrialState.FAIL,
                user_attrs={"trial_id": trial.trial_id, "status": trial.status},
            )
        )
    return study


Sampled = tuple[dict[str, Any], dict[str, "optuna.distributions.BaseDistribution"]]


def _sampled(
    client: MlflowClient, parent: Run, trials: Sequence[TrialRecord]
) -> dict[str, Sampled]:
    """Each trial's (run id's) sampled parameters and their distributions: from the space the
    search recorded, else, for a run without one, guessed from the values seen."""
    space = _recorded_space(client, parent)
    if space is not None:
        # Imported here: the searchers import Ray, which only a study drawn from a space needs.
        from tuner.search.searchers import sampled_params

        found = {t.run_id: sampled_params(space, parsed_params(t.params)) for t in trials}
        if all(found.values()):  # each trial was sampled from it, as a search's trials are
            return cast(dict[str, Sampled], found)
    return _guessed(parent, trials)


def _recorded_space(client: MlflowClient, parent: Run) -> Group | None:
    """The space the parent's search sampled (its spec artifact, with the overrides it started
    with); None for a run that recorded none, or one that can't be read back."""
    try:
        with tempfile.TemporaryDirectory() as directory:
            path = spec_of(parent, client.tracking_uri, Path(directory))
            return recorded_space(path, overrides_of(parent))
    except (MlflowException, OSError, UsageError, ValueError):  # SpaceError is a ValueError
        return None


def _guessed(parent: Run, trials: Sequence[TrialRecord]) -> dict[str, Sampled]:
    """Each trial's sampled parameters (the parent's ``tuner.sampled`` tag) with distributions
    over the values seen (numbers: their range, log-scale when it spans over LOG_SCALE_RATIO;
    anything else: categorical)."""
    keys = list(SearchTags.of(parent).sampled)
    keys = keys or sorted({key for trial in trials for key in trial.params})
    values = {k: [t.params[k] for t in trials if k in t.params] for k in keys}
    distributions = {k: _distribution(v) for k, v in values.items() if v}
    guessed: dict[str, Sampled] = {}
    for trial in trials:
        params = {
            k: _decode(trial.params[k], distributions[k])
            for k in distributions
            if k in trial.params
        }
        guessed[trial.run_id] = (params, {k: distributions[k] for k in params})
    return guessed


def _number(text: str) -> int | float | None:
    """``"32"`` -> 32, ``"0.01"`` -> 0.01; None for anything else (names, bools, lists)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _distribution(texts: Sequence[str]) -> optuna.distributions.BaseDistribution:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    numbers = [_number(t) for t in texts]
    if any(n is None for n in numbers):
        return CategoricalDistribution(sorted(set(texts)))
    low, high = min(numbers), max(numbers)
    if all(isinstance(n, int) for n in numbers):
        return IntDistribution(int(low), int(high))
    log = low > 0 and high / low > LOG_SCALE_RATIO  # learning rates, weight decays
    return FloatDistribution(float(low), float(high), log=log)


def _decode(text: str, distribution: optuna.distributions.BaseDistribution) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(distribution, IntDistribution):
        return int(text)
    if isinstance(distribution, FloatDistribution):
        return float(text)
    return text


def _log_optuna(
    client: MlflowClient,
    run_id: str,
    study: optuna.Study,
    name: str,
    target: str,
    order: Sequence[str] | None,
) -> None:
    _save(client, run_id, optuna_figure(study, name, target, order=order), name)


def optuna_figure(
    study: optuna.Study, name: str, target: str, *, order: Sequence[str] | None = None
) -> Figure:
    """One of Optuna's plots (OPTUNA_PLOTS) of ``study``; the parallel coordinates and the
    slice plot show only the MOST_IMPORTANT parameters, most important first, page-wide
    (``order``: the parameters by importance, if already ranked). A big search stays legible:
    parallel coordinates colour the TOP_LINES best trials over a grey density of the rest, and
    the scatter plots' dots shrink and fade with the number of trials."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as plots

    completed = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if name == "optuna_importances" and len(completed) < 2:
        raise ValueError(f"importances need at least 2 completed trials, have {len(completed)}")
    if not completed:
        raise ValueError("no completed trial")
    shown, height = MOST_IMPORTANT.get(name, (0, 0.0))
    drawn = _most_important(study, shown, order) if shown else study
    with warnings.catch_warnings():
        # Optuna marks its matplotlib plots experimental and warns about small samples.
        warnings.simplefilter("ignore")
        axes = getattr(plots, OPTUNA_PLOTS[name])(drawn, target_name=target)
    first = np.asarray(axes).flat[0]
    figure = first.figure
    if not first.has_data() and not first.lines and not first.collections:
        plt.close(figure)
        raise ValueError("Optuna drew nothing (too few trials or parameters)")
    if shown:
        figure.set_size_inches(FIGURE_WIDTH, height)
        kept, total = len(_param_names(drawn)), len(_param_names(study))
        title = "Parallel coordinates" if name == "optuna_parallel_coordinate" else "Slices"
        if kept < total:
            title += f": the {kept} most important of {total} parameters"
        if name == "optuna_parallel_coordinate" and _top_in_colour(figure, study):
            title += f"; the {TOP_LINES} best of {len(completed):,} trials in colour"
        figure.suptitle(title)
        first.set_title("")  # Optuna's own title, on the first panel
    if name == "optuna_parallel_coordinate":
        _legible_axes(figure)
    else:
        _thin_dots(figure, len(completed))
    return figure


def _top_in_colour(figure: Figure, study: optuna.Study) -> bool:
    """Parallel coordinates of more than TOP_LINES trials: the best TOP_LINES drawn over the
    rest in a colour per rank (the colour bar: their values), the rest one faint grey, so a
    thousand lines read as a density with the winners' paths on top. False: few enough lines
    to leave Optuna's plot as it is."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap, Normalize

    lines = figure.axes[0]
    drawn = [c for c in lines.collections if isinstance(c, LineCollection)]
    if len(drawn) != 1 or len(drawn[0].get_segments()) <= TOP_LINES or not drawn[0].colorbar:
        return False
    everyone = drawn[0]
    colour_bar = everyone.colorbar.ax
    segments = everyone.get_segments()
    values = np.array([segment[0, 1] for segment in segments])  # x = 0: the objective's axis
    minimise = study.direction.name == "MINIMIZE"
    ranked = np.argsort(-values if minimise else values)  # worst first: the best drawn last
    top = ranked[-TOP_LINES:]
    # Viridis from light green (the 20th) to dark purple (the best): distinct hues to follow a
    # line across the axes, none as pale as the grey background.
    shades = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, 256))
    best = LineCollection(
        [segments[i] for i in top],
        cmap=ListedColormap(shades if minimise else shades[::-1]),
        norm=Normalize(values[top].min(), values[top].max()),
        linewidths=1.6,
        zorder=3,
    )
    best.set_array(values[top])
    everyone.set_array(None)  # one colour, not the colour map
    alpha = float(np.clip(FAINT_INK / len(segments), *FAINT_ALPHA))
    everyone.set(color=(*FAINT, alpha), linewidth=0.8)
    lines.add_collection(best)
    label = colour_bar.get_ylabel()
    colour_bar.clear()
    figure.colorbar(best, cax=colour_bar, label=f"{label}, the best {TOP_LINES}")
    return True


def _dots(count: int) -> dict[str, Any]:
    """Matplotlib scatter settings for ``count`` trials: {} (as drawn) up to MANY_DOTS; past it
    dots of about DOT_INK / count points^2 each (within DOT_AREA), edgeless and translucent, so
    overlaps show as darker areas instead of one blot."""
    if count <= MANY_DOTS:
        return {}
    return {"sizes": [float(np.clip(DOT_INK / count, *DOT_AREA))], "linewidth": 0, "alpha": 0.6}


def _thin_dots(figure: Figure, count: int) -> None:
    """Every scatter of an Optuna plot of ``count`` trials drawn with ``_dots(count)``."""
    from matplotlib.collections import PathCollection

    for ax in figure.axes:
        for drawn in ax.collections:
            if isinstance(drawn, PathCollection):
                drawn.set(**_dots(count))


def _legible_axes(figure: Figure) -> None:
    """Parallel coordinates: each parameter's axis labels its ticks over the trials' lines, and
    draws its own grid across the whole plot. No grids; labels on a pale backing."""
    colour_bars = {c.colorbar.ax for ax in figure.axes for c in ax.collections if c.colorbar}
    for ax in figure.axes:
        if ax in colour_bars:
            continue
        ax.grid(False)
        for label in ax.get_yticklabels():
            label.set_bbox({"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1})


def importance_order(study: optuna.Study) -> list[str]:
    """The study's parameters, most important first (Optuna's fANOVA importances); those it
    can't rank (set in only some trials, like momentum for SGD) follow in the study's order."""
    import optuna

    names = _param_names(study)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ranked = list(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # fewer than 2 completed trials, nothing that varies
        ranked = []
    return ranked + [name for name in names if name not in ranked]


def _param_names(study: optuna.Study) -> list[str]:
    return list(dict.fromkeys(p for t in study.get_trials(deepcopy=False) for p in t.params))


def _most_important(
    study: optuna.Study, keep: int, order: Sequence[str] | None = None
) -> optuna.Study:
    """A copy of ``study`` with only its ``keep`` most important parameters (``order``, else
    ranked here), named ``1 lr``, ``2 width``, ...: Optuna lays parameters out alphabetically,
    so these come in rank order."""
    import optuna

    ranked = importance_order(study) if order is None else order
    names = {p: f"{i} {p}" for i, p in enumerate(ranked[:keep], 1)}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created"
    try:
        copy = optuna.create_study(direction=study.direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    for trial in study.get_trials(deepcopy=False):
        kept = [p for p in trial.params if p in names]
        copy.add_trial(
            optuna.trial.create_trial(
                params={names[p]: trial.params[p] for p in kept},
                distributions={names[p]: trial.distributions[p] for p in kept},
                value=trial.value,
                state=trial.state,
                user_attrs=trial.user_attrs,
            )
        )
    return copy


__all__ = ["confusion", "importance_order", "log_search_artifacts", "optuna_figure", "study_of"]
