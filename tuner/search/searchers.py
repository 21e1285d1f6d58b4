"""How a spec's search runs on Ray Tune: the space translated into Optuna's define-by-run
function, Ray Tune's domains and BOHB's ConfigSpace, the search algorithm and the scheduler."""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandForBOHB, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchAlgorithm, Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils import flatten_dict

from tuner.core.internals import (
    distribution_holds,
    generator_running,
    limiter_running,
    optuna_study,
    optuna_trial_numbers,
)
from tuner.core.objective import Objective
from tuner.spec.document import SearchSpec, Spec
from tuner.spec.space import (
    SCALARS,
    Branches,
    Categorical,
    Const,
    Float,
    Group,
    Int,
    Node,
    named,
    trial_params,
)
from tuner.tracking.store import sqlite_database, store_lock

if TYPE_CHECKING:
    import ConfigSpace

    from tuner.search.bohb import BOHBSearch

# ---------------------------------------------------------------------------------------------
# The search algorithm and the scheduler
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """Where an Optuna search keeps its study: `optuna-dashboard STORAGE` opens it."""

    storage: str  # an RDB URL
    name: str


def new_study(study: Study, spec: Spec, trials: Sequence[optuna.trial.FrozenTrial]) -> None:
    """Create the study, holding ``trials`` (earlier searches') before anything is sampled: one
    direction per value Optuna is told (``optimized``). A study there already is a search's
    that stopped before Tune first saved its state, started again: the trials it was asked for
    are lost with that driver (FAIL, as Optuna's heartbeat ends them), the earlier ones stay."""
    directions = [Objective(name, mode).direction for name, mode in optimized(spec).items()]
    with store_lock(sqlite_database(study.storage)):  # its first open creates its tables
        created = optuna.create_study(
            storage=study.storage,
            study_name=study.name,
            directions=directions,
            load_if_exists=True,
        )
    if not created.trials:
        created.add_trials(trials)
    for lost in created.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
        created.tell(lost.number, state=optuna.trial.TrialState.FAIL)


def optimized(spec: Spec) -> dict[str, str]:
    """What Optuna optimizes, name -> mode: every objective (a multi-objective sampler, each from
    a trial's last result), else the metric. Tune's own metric, which ASHA stops on, stays the
    first."""
    return spec.objective_modes or {spec.metric: spec.mode}


def tune_config(spec: Spec, tree: Group, study: Study | None = None) -> tune.TuneConfig:
    """How Tune picks trials: the metric, the searcher (Optuna's in ``study``), the scheduler,
    how many, how long."""
    return tune.TuneConfig(
        metric=spec.metric,
        mode=spec.mode,
        search_alg=_searcher(spec, tree, study),
        scheduler=_scheduler(spec),
        num_samples=spec.search.num_samples,  # grid: Tune runs the whole grid this often
        time_budget_s=spec.search.time_budget_s,
        # A finished trial's worker runs the next trial: no new process importing torch,
        # fetching the data and copying it to the GPU (5-7 s per trial on 2 cores).
        reuse_actors=True,
    )


def param_space(spec: Spec, tree: Group) -> dict[str, Any]:
    """The Tuner's ``param_space``: Ray's domains for random and grid search."""
    if spec.search.algorithm == "random":
        return ray_param_space(tree)
    if spec.search.algorithm == "grid":
        return ray_grid_space(tree)
    return {}  # optuna, bohb: the searcher samples everything from the tree


def _searcher(spec: Spec, tree: Group, study: Study | None) -> Searcher | SearchAlgorithm:
    # search.max_concurrent is applied here for every algorithm. Not TuneConfig's
    # max_concurrent_trials: Tune ignores it (with a warning) for a BasicVariantGenerator.
    concurrency = spec.search.max_concurrent or 0  # 0: as many as resources allow
    if spec.search.algorithm == "bohb":
        # Imported here: ConfigSpace and hpbandster take ~3 s to import, for bohb only.
        from tuner.search.bohb import BOHBSearch

        # Its own limit, not a ConcurrencyLimiter: the limiter would count the trials HyperBand
        # paused at a rung as running, and start no new ones to fill the rung.
        return BOHBSearch(
            config_space(tree),
            _FromNamed(tree),
            metric=spec.metric,
            mode=spec.mode,
            seed=spec.search.seed,
            max_concurrent=concurrency,
        )
    if spec.search.algorithm != "optuna":  # random and grid: Tune's own variant generator
        return _VariantGenerator(random_state=spec.search.seed, max_concurrent=concurrency)
    values = optimized(spec)
    searcher = _OptunaSearch(
        space=optuna_define_by_run(tree),
        metric=list(values) if len(values) > 1 else spec.metric,
        mode=list(values.values()) if len(values) > 1 else spec.mode,
        sampler=optuna_sampler(spec.search),
        # The study new_study made (load_if_exists), in memory without one.
        study_name=study.name if study else None,
        storage=optuna.storages.RDBStorage(study.storage) if study else None,
    )
    return _ConcurrencyLimiter(searcher, max_concurrent=concurrency) if concurrency else searcher


class ResumedTrials(tune.Callback):
    """Tells the searcher which trials Tune restored, at the first step of a resumed search.

    A resume restores Tune's trials and its searcher from what Tune saved every 10 s or more;
    each of tuner's searchers hears, through ``resumed(trials)``, what Tune would have told it
    had the driver not been killed. Give it the searcher given to ``TuneConfig``: Tune restores
    that very object (the callbacks and the searcher come back from one pickle, ``tuner.pkl``)."""

    def __init__(
        self, searcher: _VariantGenerator | _ConcurrencyLimiter | _OptunaSearch | BOHBSearch
    ) -> None:
        self._searcher = searcher
        self._first_step = True

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self._first_step and trials:  # a new search has no trials at its first step
            self._searcher.resumed(trials)
        self._first_step = False


class _VariantGenerator(BasicVariantGenerator):
    """Tune's generator for random and grid search, told of the trials a resume restored.

    It saves the trials it counts as running with its state, and a resume after a kill just as
    trials ended can restore it still counting trials that Tune restored as finished: Tune never
    tells it of them again, and with ``max_concurrent`` it waited for them forever."""

    def resumed(self, trials: Sequence[Trial]) -> None:
        generator_running(self).difference_update(t.trial_id for t in trials if t.is_finished())


class _ConcurrencyLimiter(ConcurrencyLimiter):
    """Ray's ConcurrencyLimiter, told of the trials a resume restored.

    It does not save the trials it counts as running: restored, it would start new trials beside
    the resumed ones, and not pass on their ends (it passes on only its own trials'), so Optuna
    never learned their values."""

    def resumed(self, trials: Sequence[Trial]) -> None:
        limiter_running(self).update(t.trial_id for t in trials if not t.is_finished())
        self.searcher.resumed(trials)


class _OptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, telling the study each trial's value once, when the trial ends, and
    saved only when that changed it.

    Ray also reports every epoch's value to the study: only Optuna's own pruners read those (ASHA
    stops trials here, the samplers read final values), and each is a write to the study's storage,
    3 s of a 24-trial digits search on sqlite (bench/bench_search_overhead.py's "searcher").
    Tune saves its state, this searcher's pickle included, every 10 s or more and whenever the
    search stops; the searcher changes only when it suggests a trial or learns one's value, so
    its file is written again only then."""

    _changes = 0  # suggestions and completions so far
    _saved: tuple[str, str, int] | None = None  # (folder, session, _changes) of the last save

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        self._changes += 1
        return super().suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Nothing: the study hears of a trial once, from ``on_trial_complete``."""

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        self._changes += 1
        super().on_trial_complete(trial_id, result, error)

    def resumed(self, trials: Sequence[Trial]) -> None:
        """Ends each of the study's running trials as what became of its Tune trial: finished
        ones are told their last result, as Tune would have; a trial Tune did not restore (asked
        for after Tune's last save, then lost with the driver) is FAIL, as Optuna's heartbeat
        ends a trial whose process died. Left running, the sampler would count it as
        running forever, and the study would show it so."""
        numbers, study = optuna_trial_numbers(self), optuna_study(self)
        restored = {numbers[t.trial_id]: t for t in trials if t.trial_id in numbers}
        running = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING])
        for ot_trial in running:
            trial = restored.get(ot_trial.number)
            if trial is None:
                study.tell(ot_trial.number, state=optuna.trial.TrialState.FAIL)
                self._changes += 1
            elif trial.is_finished():
                result = flatten_dict(trial.last_result)
                self.on_trial_complete(trial.trial_id, result, error=trial.status == Trial.ERROR)

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        saved = (checkpoint_dir, session_str, self._changes)
        if saved != self._saved:  # else the file there holds this very state
            super().save_to_dir(checkpoint_dir, session_str)
            self._saved = saved


def optuna_sampler(search: SearchSpec) -> optuna.samplers.BaseSampler:
    """Optuna's ``search.sampler``, seeded, sampling ``search.startup_trials`` trials at random
    first. Parameters outside what gp and cmaes model jointly (a branch's own, and choices for
    cmaes) are sampled at random, quietly: that is how they handle a conditional space."""
    if search.sampler == "tpe":
        return tpe_sampler(search.seed, startup_trials=search.startup_trials)
    if search.sampler == "gp":
        return optuna.samplers.GPSampler(
            seed=search.seed,
            n_startup_trials=search.startup_trials,
            warn_independent_sampling=False,
        )
    return optuna.samplers.CmaEsSampler(
        seed=search.seed, n_startup_trials=search.startup_trials, warn_independent_sampling=False
    )


def tpe_sampler(seed: int, *, startup_trials: int = 10) -> optuna.samplers.TPESampler:
    """Optuna's TPE as tuner uses it (``bench/bench_search.py`` compares it with random search):
    multivariate, so parameters that work together (lr with batch size) are modelled together;
    grouped, so each branch of a conditional space (sgd's lr and momentum, adam's lr) is its own
    joint model; and a constant liar, so trials that run at once are not sampled at one point."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # `group`
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=startup_trials,
            multivariate=True,
            group=True,
            constant_liar=True,
        )


def _scheduler(spec: Spec) -> TrialScheduler:
    if spec.search.algorithm == "bohb":  # BOHB's own: its budgets are what the searcher models
        return HyperBandForBOHB(
            time_attr="training_iteration",
            max_t=spec.scheduler.max_epochs,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    if spec.scheduler.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=spec.scheduler.max_epochs,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )


# ---------------------------------------------------------------------------------------------
# The space, translated
# ---------------------------------------------------------------------------------------------


def optuna_define_by_run(space: Group) -> Callable[[optuna.Trial], dict[str, Any]]:
    """A define-by-run function for ``OptunaSearch``: samples the space, returns the config.

    Optuna's parameters carry the names of ``named`` (``optimizer.sgd.lr``): two branches'
    ``lr`` are separate parameters to the sampler, as they are everywhere else.
    """
    return _DefineByRun(space)


@dataclass(frozen=True)
class _DefineByRun:
    # A class, not a closure: Tune pickles the searcher (with this) into its experiment state.
    space: Group

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        # Ray hands in a wrapper that would also put every suggested value in the config, under
        # its Optuna name; suggested on the Optuna trial itself, the config is what we return.
        trial = getattr(trial, "ot_trial", trial)
        values: dict[tuple[str, ...], Any] = {}
        for name, path, node in named(self.space, values.__getitem__):
            values[path] = _suggest(trial, name, node)
        config: dict[str, Any] = {}
        for path, value in values.items():
            parent = config
            for key in path[:-1]:
                parent = parent.setdefault(key, {})
            parent[path[-1]] = value
        return config


def finished_trial(
    space: Group, params: Mapping[str, Any], value: float
) -> optuna.trial.FrozenTrial | None:
    """An earlier trial (``params`` under ``named``'s names, as MLflow holds them) as a
    finished trial of a study on ``space``; None when ``space`` could not have sampled it: other
    names or constants, or a value outside a current range or choice (Optuna's distributions
    decide, as they would for a trial sampled here)."""
    sampled = sampled_params(space, params)
    if sampled is None:
        return None
    return optuna.trial.create_trial(params=sampled[0], distributions=sampled[1], value=value)


def sampled_params(
    space: Group, params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, optuna.distributions.BaseDistribution]] | None:
    """A trial's ``params`` (``named``'s names, as MLflow holds them) as the parameters Optuna
    samples on ``space`` (constants left out, lists as JSON), each with the distribution it is
    drawn from; None when ``space`` could not have sampled them (``finished_trial``)."""
    fixed = optuna.trial.FixedTrial({name: _encode(v) for name, v in params.items()})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FixedTrial's "out of the range": checked below
            config = _DefineByRun(space)(fixed)
    except ValueError:  # a parameter it lacks, or a choice not among the current ones
        return None
    inside = all(
        distribution_holds(distribution, fixed.params[name])
        for name, distribution in fixed.distributions.items()
    )
    if not inside or trial_params(space, config) != dict(params):
        return None
    return fixed.params, fixed.distributions


def _suggest(trial: optuna.Trial, name: str, node: Node) -> Any:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Float):
        return trial.suggest_float(name, node.lo, node.hi, log=node.log)
    if isinstance(node, Int):
        return trial.suggest_int(name, node.lo, node.hi, log=node.log)
    if isinstance(node, Categorical):
        # Optuna's categorical takes scalars only: lists (e.g. blocks per stage) go as JSON.
        encoded = [_encode(option) for option in node.options]
        return _decode(trial.suggest_categorical(name, encoded))
    assert isinstance(node, Branches), node  # named() walks into groups
    return trial.suggest_categorical(name, list(node.options))


def _encode(option: Any) -> Any:
    return option if isinstance(option, SCALARS) else json.dumps(option)


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


def config_space(space: Group) -> ConfigSpace.ConfigurationSpace:
    """The space as BOHB's ConfigSpace, under ``named``'s names: a branch is a categorical, and
    each of its own settings is active only when the branch is taken (an EqualsCondition)."""
    import ConfigSpace  # bohb only: an optional dependency, slow to import

    hyperparameters: dict[str, Any] = {}
    # "optimizer.sgd." -> ("optimizer.name", "sgd"): the settings under it are that branch's.
    branches: dict[str, tuple[str, str]] = {}
    conditions = []
    for name, _, node in named(space):
        if isinstance(node, Const):
            continue
        hyperparameter = hyperparameters[name] = _hyperparameter(name, node)
        inside = [prefix for prefix in branches if name.startswith(prefix)]
        if inside:  # the innermost branch: an outer one's condition holds through it
            owner, branch = branches[max(inside, key=len)]
            condition = ConfigSpace.EqualsCondition(hyperparameter, hyperparameters[owner], branch)
            conditions.append(condition)
        if isinstance(node, Branches):
            for branch in node.options:
                branches[f"{name.removesuffix('name')}{branch}."] = (name, branch)
    result = ConfigSpace.ConfigurationSpace()
    result.add([*hyperparameters.values(), *conditions])
    return result


@dataclass(frozen=True)
class _FromNamed:
    """A trial's nested config from its sampled settings under ``named``'s names (BOHB's flat
    configs), through the one define-by-run walk of the space. A class: Tune pickles it."""

    space: Group

    def __call__(self, params: Mapping[str, Any]) -> dict[str, Any]:
        fixed = optuna.trial.FixedTrial({name: _native(v) for name, v in params.items()})
        return _DefineByRun(self.space)(fixed)


def _hyperparameter(name: str, node: Node) -> Any:
    import ConfigSpace

    if isinstance(node, Float):
        return ConfigSpace.UniformFloatHyperparameter(name, node.lo, node.hi, log=node.log)
    if isinstance(node, Int):
        return ConfigSpace.UniformIntegerHyperparameter(name, node.lo, node.hi, log=node.log)
    if isinstance(node, Categorical):  # as Optuna gets them: lists as JSON
        return ConfigSpace.CategoricalHyperparameter(name, [_encode(o) for o in node.options])
    assert isinstance(node, Branches), node
    return ConfigSpace.CategoricalHyperparameter(name, list(node.options))


def _native(value: Any) -> Any:
    """A ConfigSpace value (NumPy's scalars) as Python's own, as a config holds it."""
    return value.item() if isinstance(value, np.generic) else value


def ray_param_space(space: Group) -> dict[str, Any]:
    """Ray Tune domains for random search (Ray resolves domains nested inside a choice)."""
    return {key: _ray_domain(node) for key, node in space.children.items()}


def _ray_domain(node: Node) -> Any:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Float):
        return (tune.loguniform if node.log else tune.uniform)(node.lo, node.hi)
    if isinstance(node, Int):
        # Ray's randint excludes its upper bound; ours includes it.
        return (tune.lograndint if node.log else tune.randint)(node.lo, node.hi + 1)
    if isinstance(node, Categorical):
        return tune.choice(list(node.options))
    if isinstance(node, Branches):
        return tune.choice(
            [{"name": name, **ray_param_space(sub)} for name, sub in node.options.items()]
        )
    return ray_param_space(node)


def ray_grid_space(space: Group) -> dict[str, Any]:
    """``tune.grid_search`` over every combination; continuous ranges are refused at load time."""
    return {key: _ray_grid(node) for key, node in space.children.items()}


def _ray_grid(node: Node) -> Any:
    if isinstance(node, Group):
        return ray_grid_space(node)
    values = _enumerate(node)
    return values[0] if len(values) == 1 else tune.grid_search(values)


def _enumerate(node: Node) -> list[Any]:
    """Every value a node can take (grid search), branches expanded into full sub-configs."""
    if isinstance(node, Const):
        return [node.value]
    if isinstance(node, Int):
        return list(range(node.lo, node.hi + 1))
    if isinstance(node, Categorical):
        return list(node.options)
    if isinstance(node, Branches):
        return [
            {"name": name, **combo}
            for name, sub in node.options.items()
            for combo in _enumerate_group(sub)
        ]
    if isinstance(node, Group):
        return _enumerate_group(node)
    raise AssertionError(f"cannot enumerate {node}")  # Float: refused by check_grid


def _enumerate_group(group: Group) -> list[dict[str, Any]]:
    keys = list(group.children)
    choices = [_enumerate(group.children[key]) for key in keys]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices)]
