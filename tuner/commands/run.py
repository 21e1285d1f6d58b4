"""One search, end to end: data -> Ray Tune (searcher + scheduler) -> MLflow -> test evaluation."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback

import data
from tuner.conclusion import pareto
from tuner.conclusion import repeats as final_repeats
from tuner.core.code_version import code_version
from tuner.core.errors import UsageError
from tuner.core.selection import (
    AUTO_REPEATS,
    AUTO_TOP_K,
    SMALL_VAL_IMAGES,
    final_value,
    is_accuracy,
    tied,
)
from tuner.core.terminal import erase_line, say, step
from tuner.publishing import export
from tuner.publishing.closing import Closing, close
from tuner.reading.summary import Summary
from tuner.search import searchers as search
from tuner.search import tune_state
from tuner.search.inputs import anchored_space, load_data, shared_data, trial_settings
from tuner.search.progress import ProgressLine, TrialLines, trial_table
from tuner.search.ray_start import RayStart
from tuner.search.recorder import TrialRecorder
from tuner.search.warm_start import WarmStart, earlier_trials
from tuner.spec import own_code
from tuner.spec import space as space_lang
from tuner.spec.document import Spec
from tuner.tracking.experiment import Experiment
from tuner.tracking.files import SearchFiles
from tuner.tracking.records import TrialRecord, trials_of
from tuner.tracking.tags import SearchTags, Status, StudyTags
from tuner.trainables import Settings, Trainable, trainable_module, trial_report
from tuner.trainables.metrics import Evaluation


class Interrupted(Exception):
    """The search was stopped (Ctrl-C) before it finished; its state is saved for --resume."""


class Unwritten(Exception):
    """The search finished, but the tracking server, down, did not take ``count`` writes: they
    are kept in ``journal`` for `tuner sync`, its closing step beside it
    (tuner.publishing.closing)."""

    def __init__(self, count: int, journal: Path) -> None:
        super().__init__(count, journal)
        self.count, self.journal = count, journal


@dataclass
class _Search:
    """A search made ready before Ray Tune starts: what each later step reads."""

    spec: Spec
    tree: space_lang.Group  # the spec's space, its local paths made absolute
    splits: data.Splits
    trainable: Trainable
    settings: Settings
    experiment: Experiment  # its parent run, once started or found
    path: str  # Tune's folder for it (<storage>/<name>)
    start: str  # NEW, RESUME (Tune restores it) or RESTART (Tune never saved it)
    warm: WarmStart | None  # earlier searches' trials for Optuna (a new start's only)


NEW, RESUME, RESTART = "new", "resume", "restart"


@dataclass
class _Outcome:
    """What the search concluded: its best trial, tested, and the repeats that chose it."""

    best: Any  # the best trial's Tune result
    evaluation: Evaluation  # on the test split
    repeats: final_repeats.Repeats | None


def run_search(
    spec: Spec,
    spec_path: Path,
    *,
    tracking_uri: str,
    ray_start: RayStart,
    storage: str | None = None,
    resume: bool = False,
    overrides: Sequence[str] = (),
    verbose: bool = False,
) -> Summary:
    """Run (or resume) the search a validated spec describes; MLflow records every trial.

    The command resolved ``tracking_uri`` and checked the store, and began starting Ray
    (``ray_start``): this gets the search ready meanwhile, then runs it, concludes it and
    publishes it. ``verbose``: Ray's trial table and Ray's and Optuna's own messages too."""
    try:
        search = _ready(spec, tracking_uri, storage, resume)
        ray_start.wait()
    except BaseException:  # e.g. a usage error found while Ray was starting: stop it first
        ray_start.cancel()
        raise
    tuner = _tuner(search, spec_path, overrides, verbose)
    try:
        outcome = _conclude(search, tuner.fit())
        model_uri = _publish(search, outcome, verbose)
    except KeyboardInterrupt:
        erase_line()  # the message that follows starts on a clean line
        # Tune's state is saved at every checkpoint; mark MLflow's runs so resume finds them.
        search.experiment.interrupt()
        raise Interrupted(search.path) from None
    except BaseException as error:
        search.experiment.fail(f"{type(error).__name__}: {error}")
        raise
    kept = search.experiment.flush(close=True)
    if kept:  # the search itself is done: what the server did not take waits for `tuner sync`
        raise Unwritten(kept, search.experiment.journal)
    return _summary(search, outcome, model_uri)


def _ready(spec: Spec, tracking_uri: str, storage: str | None, resume: bool) -> _Search:
    """The data, the trainable, the parent run's experiment and Tune's folder: a new one, or
    the interrupted search's (``resume``)."""
    if own := own_code.own_names(spec.model_dump()):  # a spec running the user's code says so
        say(own_code.imported_line(own))
    splits = load_data(spec)
    tree = anchored_space(spec.tree)
    experiment = Experiment(tracking_uri, spec.experiment, spec.tracking.artifacts)
    if resume:
        path = _resumed_folder(experiment, splits.sizes, storage)
        start = RESUME if tune_state.ever_saved(path) else RESTART
    else:
        experiment.files = SearchFiles.new(storage, spec.name)
        path = experiment.files.folder
        start = NEW
    experiment.start_writer()  # its process starts while the rest gets ready (and Ray starts)
    # A bad experiment name in search.warm_start stops it here, before Ray is needed.
    warm = None if start == RESUME else earlier_trials(experiment.client, spec, tree)
    return _Search(
        spec=spec,
        tree=tree,
        splits=splits,
        trainable=trainable_module(spec.trainable, code_path=spec.code_path),
        settings=trial_settings(spec, progress_bars=sys.stderr.isatty()),
        experiment=experiment,
        path=path,
        start=start,
        warm=warm,
    )


def _tuner(search: _Search, spec_path: Path, overrides: Sequence[str], verbose: bool) -> tune.Tuner:
    """Tune's Tuner for the search: restored, started again, or new (its parent run started)."""
    spec, experiment = search.spec, search.experiment
    # Data in memory goes to Ray's object store once (then the driver reads it from there);
    # a cache is opened by each trial on its own node (search.inputs.shared_data).
    trial_data, search.splits = shared_data(search.splits)
    function = tune.with_resources(
        tune.with_parameters(search.trainable.train, splits=trial_data, settings=search.settings),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    if search.start == RESUME:
        experiment.resume()
        return tune.Tuner.restore(
            search.path, function, resume_unfinished=True, resume_errored=True
        )
    if search.start == RESTART:
        say(
            "tuner: the search stopped before Ray Tune first saved its state: its trials start "
            "again, in the same MLflow run"
        )
        experiment.restart()
        tune_state.clear(search.path)
    else:
        experiment.start(spec_path, _search_tags(search, spec_path, overrides))
    study = _optuna_study(spec, experiment, search.path, search.warm)
    return _new_tuner(spec, search.tree, function, search.path, experiment, study, verbose)


def _search_tags(search: _Search, spec_path: Path, overrides: Sequence[str]) -> SearchTags:
    spec = search.spec
    return SearchTags(
        metric=spec.metric,
        mode=spec.mode,
        sampled=tuple(space_lang.sampled_keys(search.tree)),
        spec=spec_path.name,
        storage=search.path,
        overrides=tuple(overrides),
        images=search.splits.sizes,
        objectives=tuple(spec.objective_modes.items()),
        code=code_version(),
        code_path=spec.code_path,
    )


def _conclude(search: _Search, results: tune.ResultGrid) -> _Outcome:
    """The best trial (ranked, or the Pareto front's best; repeats break a tie) and its test
    evaluation; the best and the front's members marked in MLflow."""
    spec, experiment, splits = search.spec, search.experiment, search.splits
    trainable, settings = search.trainable, search.settings
    ranked = _ranked(results, spec)
    best, repeats = ranked[0], None
    front = _front(experiment, spec)
    if front:  # the best is the front member with the best metric (ties: the cheaper)
        best = _result_of(results, front[0].trial_id)
    seeds, top_k = _repeats_of(spec, ranked, len(splits.val_y))
    if seeds > 1:  # never with objectives (refused at load, never chosen by _repeats_of)
        repeats = _repeat_top(trainable, ranked, splits, settings, spec, seeds, top_k)
        best = next(r for r in ranked if _trial_id(r) == repeats.trial_id)
        evaluation = repeats.evaluations[0]  # the search's own seed
        final_repeats.record(experiment, repeats, search.tree)
    elif spec.final.retrain:
        evaluation = _retrain_and_test(trainable, best.config, splits, settings, spec)
    else:
        step("testing the best trial on the test split")
        evaluation = trainable.evaluate_test(best, splits=splits, settings=settings)
    experiment.mark_best(_trial_id(best))
    if front:
        step(f"testing {min(len(front), MAX_TESTED_FRONT)} of the Pareto front's trials")
        experiment.mark_pareto(_test_front(front, results, trainable, splits, settings))
    return _Outcome(best, evaluation, repeats)


def _publish(search: _Search, outcome: _Outcome, verbose: bool) -> str | None:
    """The closing step (plots, tables, the registered model), then the search's outcome on
    its parent run; the model's ``models:/`` URI, if registered."""
    spec, experiment = search.spec, search.experiment
    example = search.splits.test_x[: export.EXAMPLE_IMAGES].numpy()
    closing = Closing(experiment.parent_id, outcome.evaluation, example, spec.experiment)
    model_uri = close(experiment, closing, verbose=verbose)
    step("recording the outcome in MLflow")
    config = outcome.best.config
    experiment.finish(
        config,
        space_lang.trial_params(search.tree, config),
        {f"best_{spec.metric}": _final_value(outcome.best, spec)},
        outcome.evaluation.logged_metrics,
        final="retrained on train+val" if spec.final.retrain else "last checkpoint",
    )
    return model_uri


def _summary(search: _Search, outcome: _Outcome, model_uri: str | None) -> Summary:
    spec, experiment = search.spec, search.experiment
    return Summary(
        experiment=spec.experiment,
        tracking_uri=experiment.tracking_uri,
        artifacts=experiment.artifacts,
        parent_run_id=experiment.parent_id,
        storage=search.path,
        metric=spec.metric,
        best_trial_id=_trial_id(outcome.best),
        test_metrics=outcome.evaluation.metrics,
        model_size=outcome.evaluation.model_size,
        model_uri=model_uri,
        retrained=spec.final.retrain,
        val_images=len(search.splits.val_y),
        test_spread=outcome.repeats.test if outcome.repeats else None,
        trials=trials_of(experiment.client, experiment.client.get_run(experiment.parent_id)),
        sampled=space_lang.sampled_keys(search.tree),
    )


def _retrain_and_test(
    trainable: ModuleType,
    config: dict[str, Any],
    splits: data.Splits,
    settings: Settings,
    spec: Spec,
) -> Evaluation:
    """``final.retrain``, as a Ray task with a trial's resources (a GPU on a GPU cluster)."""
    images = len(splits.train_y) + len(splits.val_y)
    say(f"Retraining the best config on train+val ({images} images), then testing it.")
    task = ray.remote(trainable.retrain_and_test).options(
        num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu, max_retries=spec.max_failures
    )
    return ray.get(task.remote(config, splits=splits, settings=settings))


def _repeats_of(spec: Spec, ranked: list[Any], val_images: int) -> tuple[int, int]:
    """(seeds, top_k) of ``final.repeats``: the spec's when it sets them; unset, AUTO_REPEATS
    seeds of the configs tied with the best (at most AUTO_TOP_K) when the validation split is
    below SMALL_VAL_IMAGES, where its noise can't rank them; else (1, 1), no repeats."""
    if spec.final.repeats is not None:
        return spec.final.repeats, spec.final.top_k
    if spec.objectives or val_images >= SMALL_VAL_IMAGES or not is_accuracy(spec.metric):
        return 1, 1
    firsts = {trial_id for trial_id, _ in _top_configs(ranked, AUTO_TOP_K)}  # distinct configs
    values = [_final_value(r, spec) for r in ranked if _trial_id(r) in firsts]
    top_k = min(tied(values, val_images), AUTO_TOP_K)
    if top_k == 1:
        return 1, 1
    say(
        f"tuner: the top {top_k} configs' {spec.metric} are within the noise of "
        f"{val_images} validation images: training each again with {AUTO_REPEATS} seeds to "
        "choose (final.repeats; set final.repeats: 1 to skip)"
    )
    return AUTO_REPEATS, top_k


def _top_configs(ranked: list[Any], k: int) -> list[tuple[str, dict[str, Any]]]:
    return final_repeats.top_configs([(_trial_id(r), r.config) for r in ranked], k)


def _repeat_top(
    trainable: Trainable,
    ranked: list[Any],
    splits: data.Splits,
    settings: Settings,
    spec: Spec,
    seeds: int,
    top_k: int,
) -> final_repeats.Repeats:
    """``final.repeats``: the top ``top_k`` configs trained again with ``seeds`` seeds, the
    best on average tested once per seed."""
    candidates = _top_configs(ranked, top_k)
    repeats = final_repeats.repeat(trainable, candidates, splits, settings, spec, seeds)
    say(repeats.table())
    return repeats


def _optuna_study(
    spec: Spec, experiment: Experiment, path: str, warm: WarmStart | None
) -> search.Study | None:
    """An Optuna search's study, in a real storage (see search.optuna_storage), named after the
    experiment and its parent run, holding the warm start's trials; None for random and grid."""
    if spec.search.algorithm != "optuna":
        return None
    storage = SearchFiles(path).optuna_storage(spec.search.optuna_storage, experiment.tracking_uri)
    study = search.Study(storage, f"{spec.experiment}/{experiment.parent_id}")
    trials = warm.trials if warm else []
    search.new_study(study, spec, trials)
    experiment.set_tags(StudyTags(storage, study.name, len(trials)).tags())
    if warm and spec.search.warm_start:
        say(warm.describe(spec.search.warm_start))
    return study


def _new_tuner(
    spec: Spec,
    tree: space_lang.Group,
    function: Any,
    path: str,
    experiment: Experiment,
    study: search.Study | None,
    verbose: bool = False,
) -> tune.Tuner:
    recorder = TrialRecorder(
        experiment.tracking_uri,
        experiment.experiment_id,
        experiment.parent_id,
        spec.metric,
        spec.mode,
        tree,
        journal=experiment.journal,
    )
    callbacks = [recorder, TrialLines(spec.metric, spec.mode, tree, verbose=verbose)]
    if not verbose:  # tuner's progress line; --verbose: Ray's table as before (not both)
        max_epochs, budget = spec.scheduler.max_epochs, spec.search.time_budget_s
        callbacks.append(
            ProgressLine(
                spec.metric, spec.mode, max_epochs, trainable=spec.trainable, time_budget_s=budget
            )
        )
    config = search.tune_config(spec, tree, study)
    return tune.Tuner(
        function,
        param_space=search.param_space(spec, tree),
        tune_config=config,
        run_config=tune.RunConfig(
            name=PurePosixPath(path).name,
            storage_path=str(PurePosixPath(path).parent),
            # JsonLoggerCallback: Tune's own result.json per trial, the histories ResultGrid
            # reads (its CSV and TensorBoard copies are off: tuner.search.ray_start).
            callbacks=[
                *callbacks,
                JsonLoggerCallback(),
                tune_state.StateSnapshots(),
                tune_state.CheckpointRetention(),
                search.ResumedTrials(config.search_alg),
            ],
            # Tune deletes none: CheckpointRetention does, once no saved state of Tune can
            # name them. Each checkpoint also carries the trial's best weights so far, for the
            # test evaluation, so the latest is all a finished trial needs.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            progress_reporter=trial_table(spec.metric, tree) if verbose else None,
            verbose=1 if verbose else 0,  # 0: no table, no "Result logdir", no run-time lines
        ),
    )


def _resumed_folder(experiment: Experiment, sizes: str, storage: str | None) -> str:
    """The Tune state of the experiment's interrupted search (``storage``: --storage, where
    its folder is now), repaired if it was cut short."""
    path = experiment.find_resumable(sizes, storage)
    missing = not tune.Tuner.can_restore(path) if "://" in path else not Path(path).is_dir()
    if missing:
        raise UsageError(
            f"nothing to resume at {path}: Ray Tune's state is not there (check --storage); "
            "start the search again with `python -m tuner run SPEC`"
        )
    for name in tune_state.repair(path):
        say(
            f"tuner: Tune's {name} was cut short or not yet in storage when the search "
            "stopped; resuming from tuner's last whole copy of it"
        )
    return path


def _trial_id(result: Any) -> str:
    return result.metrics.get("trial_id") or Path(result.path).name


def _ranked(results: tune.ResultGrid, spec: Spec) -> list[Any]:
    """The trials that trained, best first by their final value (tuner.core.selection; those
    without a finite one last); rejected trials never count."""
    reported = [r for r in results if r.metrics and spec.metric in r.metrics]
    if not reported:
        raise UsageError(f"{spec.name}: no trial reported `{spec.metric}`; {_why(results)}")
    trained = [r for r in reported if trial_report.status(r.metrics) != Status.REJECTED]
    if not trained:
        raise UsageError(
            f"{spec.name}: every trial's model broke the spec's constraints "
            f"({spec.constraints.model_dump(exclude_none=True)}); loosen them or shrink the space"
        )

    def rank(result: Any) -> tuple[bool, float, str]:
        # Ties go by trial id, as `tuner best` lists them (results.trials_of): the top_k that
        # final.repeats trains again are the first rows of that table.
        return (*spec.objective.rank_key(_final_value(result, spec)), _trial_id(result))

    return sorted(trained, key=rank)


MAX_TESTED_FRONT = 8  # front members tested after the search (a pass over the test split each)


def _front(experiment: Experiment, spec: Spec) -> list[TrialRecord]:
    """The Pareto front of a multi-objective search ([] without ``objectives``)."""
    if not spec.objectives:
        return []
    experiment.flush()  # the trials' runs and last epochs may still be queued
    trials = trials_of(experiment.client, experiment.client.get_run(experiment.parent_id))
    return pareto.front(trials, tuple(spec.objective_modes.items()))


def _test_front(
    front: Sequence[TrialRecord],
    results: tune.ResultGrid,
    trainable: ModuleType,
    splits: data.Splits,
    settings: Settings,
) -> dict[str, dict[str, float]]:
    """Trial id -> test metrics of each front member's best checkpoint (the first
    MAX_TESTED_FRONT; the rest {}): for reading only, after every choice was made."""
    tests: dict[str, dict[str, float]] = {member.trial_id: {} for member in front}
    for member in front[:MAX_TESTED_FRONT]:
        result = _result_of(results, member.trial_id)
        evaluation = trainable.evaluate_test(result, splits=splits, settings=settings)
        tests[member.trial_id] = evaluation.metrics
    return tests


def _result_of(results: tune.ResultGrid, trial_id: str) -> Any:
    return next(result for result in results if _trial_id(result) == trial_id)


def _why(results: tune.ResultGrid) -> str:
    """The first trial error's last line (what the user must fix), else where to look."""
    texts = [str(error).strip() for error in results.errors]
    lines = [text.splitlines()[-1] for text in texts if text]
    if not lines:
        return "see the errors above"
    others = f" ({len(lines) - 1} more failed, see above)" if len(lines) > 1 else ""
    return f"a trial failed with {lines[0]}{others}"


def _final_value(result: Any, spec: Spec) -> float:
    """The trial's final value (tuner.core.selection) over the epochs Tune's history holds."""
    frame = result.metrics_dataframe
    history = list(frame[spec.metric]) if frame is not None and spec.metric in frame else []
    # A driver killed before Tune copied a finished trial's progress file to storage leaves its
    # history empty, or short of its last epochs, after a resume: its last result (from Tune's
    # saved state) still counts, once.
    done = frame["training_iteration"].iloc[-1] if history else 0
    if result.metrics.get("training_iteration", 0) > done:
        history.append(result.metrics[spec.metric])
    return final_value(history)
