"""Loading and validating an experiment spec (one YAML file) before anything runs.

Every problem becomes one ``SpecError`` line naming the file, the key path and what is allowed;
the CLI prints it and exits 2. Nothing is written before a spec has passed.
"""

from __future__ import annotations

import importlib.util
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from tuner.core import terminal
from tuner.core.errors import UsageError, unknown_key
from tuner.core.objective import Mode, Objective
from tuner.spec import own_code
from tuner.spec import space as space_lang


class SpecError(UsageError):
    """A spec that can't run: the message is ``FILE: key.path: problem``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Fraction = Annotated[float, Field(gt=0, lt=1)]
PositiveInt = Annotated[int, Field(ge=1)]
MAX_OBJECTIVES = 3  # beyond that a front holds most trials and says little


class DataSpec(_Strict):
    dataset: str = "digits"
    root: str | None = None  # where the dataset lives on disk (None: the loader's default)
    val_fraction: Fraction = 0.2  # of the training data, stratified: used for selection
    test_fraction: Fraction = 0.2  # only for datasets without their own test split
    seed: int = 0
    max_train: PositiveInt | None = None  # stratified subset, for quick searches
    max_test: PositiveInt | None = None
    options: dict[str, Any] = {}  # loader options, e.g. image_size for image_folder
    # Where decoded images of a folder or manifest are kept: in memory (once per node, in Ray's
    # object store), or decoded once into each node's cache on disk, for collections larger
    # than memory; auto: memory up to 10% of the node's memory (data.storage, docs/data.md).
    keep_in: Literal["auto", "memory", "cache"] = "auto"
    cache_dir: str = "~/.cache/tuner/images"  # the cache of decoded images, on each node's disk


class SearchSpec(_Strict):
    # optuna: Optuna's `sampler` under `scheduler`; bohb: Tune's BOHB, its own searcher and
    # HyperBand scheduler (docs/search.md; bench/bench_searchers.py measures them all).
    algorithm: Literal["optuna", "random", "grid", "bohb"] = "optuna"
    # Trials; for grid, repeats of the whole grid. None: 10 trials, or the grid once.
    num_samples: PositiveInt | None = None
    max_concurrent: PositiveInt | None = None  # any algorithm; None: as many as resources allow
    seed: int = 0
    time_budget_s: Annotated[float, Field(gt=0)] | None = None
    # optuna only: Optuna's sampler (tuner.search.searchers.optuna_sampler): gp, a Gaussian
    # process; tpe; cmaes, CMA-ES (one objective only). None: gp_or_tpe(num_samples).
    sampler: Literal["tpe", "gp", "cmaes"] | None = None
    # optuna only: trials sampled at random before the sampler models the results (Optuna's
    # default n_startup_trials is 10; see README's "Speed" for the bench behind tuner's choice).
    startup_trials: PositiveInt = 10
    # Experiments whose finished trials Optuna learns from before it samples (optuna only).
    warm_start: list[str] = []
    # Optuna's study (an RDB URL, e.g. postgresql://...); None: sqlite, optuna.db beside the
    # MLflow sqlite store, or beside Tune's state for another MLflow store.
    optuna_storage: str | None = None

    @model_validator(mode="after")
    def _defaults(self) -> SearchSpec:
        if self.num_samples is None:
            self.num_samples = 1 if self.algorithm == "grid" else 10
        if self.sampler is None and self.algorithm == "optuna":
            self.sampler = gp_or_tpe(self.num_samples)
        return self


# The most trials the default sampler is a GP for. bench/bench_searchers.py measured GP ahead of
# TPE for the same epochs on both its tasks, in searches of up to ~200 trials; a GP's ask, in
# Tune's loop, grows with the trials it fits where TPE's stays milliseconds
# (bench/bench_sampler_ask.py): past this, thousands of trials, TPE. OptunaHub's AutoSampler
# leaves the GP at the same count.
GP_MAX_TRIALS = 250


def gp_or_tpe(trials: int) -> Literal["gp", "tpe"]:
    """The sampler a search of ``trials`` trials gets unless its spec names one."""
    return "gp" if trials <= GP_MAX_TRIALS else "tpe"


ASHA_ONLY = ("grace_period", "reduction_factor")  # SchedulerSpec keys only ASHA reads


class SchedulerSpec(_Strict):
    type: Literal["asha", "fifo"] = "asha"
    max_epochs: PositiveInt = 10  # the training budget of one trial, in epochs
    grace_period: PositiveInt = 1  # epochs every trial runs before ASHA may stop it
    # ASHA lets the top 1/reduction_factor of a rung go on. 4, Tune's own default, reached
    # random search's best in fewer epochs than 3 or 2 did in bench/bench_search.py (README).
    reduction_factor: Annotated[float, Field(gt=1)] = 4

    @model_validator(mode="after")
    def _grace_within_budget(self) -> SchedulerSpec:
        if self.grace_period > self.max_epochs:
            raise ValueError(
                f"grace_period ({self.grace_period}) must be <= max_epochs ({self.max_epochs})"
            )
        return self


class ResourcesSpec(_Strict):
    cpu: Annotated[float, Field(gt=0)] = 1  # CPUs per trial (torch uses that many threads)
    gpu: Annotated[float, Field(ge=0)] = 0  # GPUs per trial; fractions share one GPU


class ConstraintsSpec(_Strict):
    """Limits on the model a config builds; a config over them is rejected, never trained."""

    max_params: PositiveInt | None = None  # learned numbers (deep: parameters)
    max_model_mb: Annotated[float, Field(gt=0)] | None = None  # its weights, in MB (2**20 bytes)


class FinalSpec(_Strict):
    """What happens to the best config after the search, before the test split is touched."""

    # True: retrain the best config on train+val for its full epoch budget, then test that
    # model; False: test the best trial's last checkpoint as it is (tuner.core.selection).
    retrain: bool = False
    # Seeds each of the top_k configs is trained again with (tuner.final): they are re-ranked by
    # their mean validation metric and the chosen one tested once per seed. 1: no repeats.
    # None (unset): on a small validation split, the configs tied with the best within its
    # noise are repeated (tuner.core.selection: SMALL_VAL_IMAGES, AUTO_REPEATS); else no repeats.
    repeats: PositiveInt | None = None
    top_k: PositiveInt = 1

    @model_validator(mode="after")
    def _top_k_needs_repeats(self) -> FinalSpec:
        if self.top_k > 1 and (self.repeats or 1) == 1:
            raise ValueError(
                f"top_k ({self.top_k}) re-ranks configs by repeated training: set repeats >= 2, "
                "or leave top_k out"
            )
        return self


class TrackingSpec(_Strict):
    uri: str | None = None  # MLflow tracking URI; None: sqlite:///mlflow.db in the cwd
    experiment: str | None = None  # MLflow experiment name; None: the spec's name
    # Where a new MLflow experiment keeps plots and models (a folder or a URI); None: beside a
    # sqlite store (its folder's mlartifacts/), or the tracking server's choice.
    artifacts: str | None = None


class Spec(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    # deep, classical, or the user's own training function, "my_pkg.train:fit"
    # (tuner.trainables.function; docs/own-code.md).
    trainable: str = "deep"
    data: DataSpec = DataSpec()
    metric: str = "val_acc"
    # None: follows the metric (min for a *_loss, max otherwise), so val_loss isn't maximised.
    mode: Mode | None = None
    # A multi-objective search: [{val_acc: max}, {model_params: min}]. The first is the metric
    # (ASHA stops on it, the checkpoint keeps its best epoch); the others are model costs the
    # trainable reports before training. The result is a Pareto front (tuner.pareto).
    objectives: list[dict[str, Mode]] | None = None
    search: SearchSpec = SearchSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    resources: ResourcesSpec = ResourcesSpec()
    tracking: TrackingSpec = TrackingSpec()
    constraints: ConstraintsSpec = ConstraintsSpec()
    final: FinalSpec = FinalSpec()
    max_failures: Annotated[int, Field(ge=0)] = 0  # retries of a failing trial
    cache_dir: str = "~/.cache/tuner/features"  # classical features, on each node's own disk
    space: dict[str, Any] = {}
    # `space` parsed, by validate: the search and its checks use this one tree.
    _tree: space_lang.Group | None = PrivateAttr(default=None)
    # The folders its own code is imported from (own_code.code_path); () if it names none.
    _code_path: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("trainable")
    @classmethod
    def _known_trainable(cls, trainable: str) -> str:
        from tuner.trainables import TRAINABLES

        if trainable in TRAINABLES:
            return trainable
        from models.options import is_import_path  # `models` imports torch: own code only

        if not is_import_path(trainable):
            raise ValueError(
                f"must be {' or '.join(map(repr, TRAINABLES))}, or your own training function "
                "as 'package.module:function'"
            )
        return trainable

    @field_validator("objectives")
    @classmethod
    def _one_name_each(cls, objectives: list[dict[str, str]] | None) -> list[dict[str, str]] | None:
        if objectives is None:
            return None
        if any(len(objective) != 1 for objective in objectives):
            raise ValueError("each objective is one `name: max|min` entry, e.g. {val_acc: max}")
        names = [name for objective in objectives for name in objective]
        if not 2 <= len(names) <= MAX_OBJECTIVES or len(set(names)) < len(names):
            raise ValueError(f"give 2 to {MAX_OBJECTIVES} objectives, each name once")
        return objectives

    @model_validator(mode="after")
    def _mode_from_metric(self) -> Spec:
        # The first objective is the metric; one also written must agree (_check_together).
        if self.objectives and not {"metric", "mode"} & self.model_fields_set:
            [(self.metric, self.mode)] = self.objectives[0].items()
        if self.mode is None:
            self.mode = "min" if self.metric.endswith("_loss") else "max"
        return self

    @property
    def objective(self) -> Objective:
        """The search metric and its mode (which validation always sets)."""
        return Objective(self.metric, cast(Mode, self.mode))

    @property
    def objective_modes(self) -> dict[str, str]:
        """Each objective's name and mode, in order; {} for a single-metric search."""
        return {k: v for objective in self.objectives or [] for k, v in objective.items()}

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def code_path(self) -> tuple[str, ...]:
        """The folders its own code (import paths) is imported from; () when it names none."""
        return self._code_path

    @property
    def tree(self) -> space_lang.Group:
        """The parsed space (validate keeps what it parsed)."""
        if self._tree is None:
            self._tree = space_lang.parse(self.space)
        return self._tree


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """A safe loader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise SpecError(f"{source}: invalid YAML at {where}: {error.problem}") from None
    except yaml.YAMLError as error:  # e.g. control characters: PyYAML's message spans lines
        raise SpecError(f"{source}: invalid YAML: {' '.join(str(error).split())}") from None


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_spec(
    path: str | Path, overrides: list[str] | None = None, *, code_path: Sequence[str] | None = None
) -> Spec:
    """Read, override (``--set key.path=value``) and validate a spec; raises SpecError.

    Import paths in it (the user's own code) are imported from ``code_path``, by default the
    spec file's folder and the current directory (own_code); a resumed search passes the one it
    recorded."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file; see search_spaces/ for examples") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: can't read the spec as UTF-8 text ({error})") from None
    raw = read_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec must be a YAML mapping (name:, data:, space:, ...)")
    for override in overrides or []:
        apply_override(raw, override, str(path))
    # In this order: grace_period dropped with ASHA is not lowered first.
    notes = [_drop_asha_keys(raw, overrides or []), _fit_grace_period(raw, overrides or [])]
    folders: tuple[str, ...] = ()
    if own_code.own_names(raw):  # checking it imports it: from these folders, here and in trials
        from models.options import use_code_path

        folders = tuple(own_code.code_path(path) if code_path is None else code_path)
        use_code_path(folders)
    spec = validate(raw, str(path), overrides or [])
    spec._code_path = folders
    for note in filter(None, notes):
        terminal.note(f"tuner: {note}")
    return spec


def recorded_space(path: str | Path, overrides: Sequence[str] = ()) -> space_lang.Group:
    """The space of a spec file a search recorded, with the overrides it started with: what its
    trials were sampled from. Only the space: the rest was checked when the search started, and
    a spec read back for its plots should neither fail on, nor note again, what load_spec
    would (a dataset since renamed, ASHA keys dropped)."""
    path = Path(path)
    raw = read_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec must be a YAML mapping (name:, data:, space:, ...)")
    for override in overrides:
        apply_override(raw, override, str(path))
    return space_lang.parse(raw.get("space") or {})


def _drop_asha_keys(raw: dict[str, Any], overrides: Sequence[str]) -> str | None:
    """A scheduler switched to fifo on the command line drops the file's ASHA-only keys, rather
    than failing: they went with the scheduler the user replaced. Returns the note saying so.
    One also set on the command line still fails (``_check_together``): that is a contradiction.
    """
    keys = {override.partition("=")[0] for override in overrides}
    scheduler = raw.get("scheduler")
    if "scheduler.type" not in keys or not isinstance(scheduler, dict):
        return None
    if scheduler.get("type") != "fifo":  # the last --set scheduler.type wins
        return None
    dropped = [
        f"scheduler.{key} {scheduler.pop(key)}"
        for key in ASHA_ONLY
        if key in scheduler and f"scheduler.{key}" not in keys
    ]
    if not dropped:
        return None
    return f"{', '.join(dropped)} of the spec file dropped: asha's, and --set scheduler.type=fifo"


def _fit_grace_period(raw: dict[str, Any], overrides: Sequence[str]) -> str | None:
    """A budget shortened on the command line (``--max-epochs 1``) lowers the file's ASHA
    grace period to fit, rather than failing; returns the note saying so. A spec file whose own
    grace period exceeds its own budget, or both set on the command line, still fails."""
    keys = {override.partition("=")[0] for override in overrides}
    if "scheduler.max_epochs" not in keys or "scheduler.grace_period" in keys:
        return None
    scheduler = raw.get("scheduler")
    if not isinstance(scheduler, dict):
        return None
    grace, budget = scheduler.get("grace_period"), scheduler.get("max_epochs")
    if not (_is_int(grace) and _is_int(budget) and 1 <= budget < grace):
        return None  # nothing to lower, or a value that validation reports
    scheduler["grace_period"] = budget
    return (
        f"scheduler.grace_period {grace} lowered to {budget} to fit "
        f"scheduler.max_epochs={budget} from the command line"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(raw: dict[str, Any], source: str, overrides: Sequence[str] = ()) -> Spec:
    """Validate a raw spec mapping: the schema, then the space, then the trainable's names.

    An error names where the bad value came from: the ``--set`` override that set its key, or
    else ``source`` (the file).
    """
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as error:
        path, message = _first_error(error)
        located = f"{path}: {message}" if path else message
        raise SpecError(f"{_origin(path, source, overrides)}: {located}") from None
    _check_dataset(spec, source, overrides)
    try:
        tree = spec.tree
        if spec.search.algorithm == "grid":
            space_lang.check_grid(tree)
        _check_trainable(spec, tree)
        _check_together(spec, tree)
    except space_lang.SpaceError as error:
        raise SpecError(f"{_origin(error.path, source, overrides)}: {error}") from None
    return spec


def _origin(path: str, source: str, overrides: Sequence[str]) -> str:
    """``--set KEY=VALUE`` when the last override touching ``path`` set it, else ``source``."""
    for override in reversed(overrides):
        key = override.partition("=")[0]
        if path == key or path.startswith(f"{key}.") or key.startswith(f"{path}."):
            return f"--set {override}"
    return source


def _check_dataset(spec: Spec, source: str, overrides: Sequence[str]) -> None:
    """A known dataset, and options its loader takes (``Registry.check``)."""
    import data  # torch is slow to import: only once a spec has parsed

    name, path = spec.data.dataset, "data.dataset"
    if name not in data.DATASETS:
        origin = _origin(path, source, overrides)
        raise SpecError(f"{origin}: {path}: {data.DATASETS.unknown(name)}")
    try:
        data.DATASETS.check(name, spec.data.options)
    except data.DatasetError as error:
        path = "data.options"
        raise SpecError(f"{_origin(path, source, overrides)}: {path}: {error}") from None
    if spec.data.keep_in == "cache" and _returns(data.DATASETS[name]) is data.RawDataset:
        path = "data.keep_in"
        raise SpecError(
            f"{_origin(path, source, overrides)}: {path}: {name} decodes its images itself "
            "(a RawDataset); only loaders of image files (image_folder, manifest) are cached "
            "on disk: use auto or memory"
        )


def _returns(loader: Any) -> Any:
    """What a loader's annotation says it returns (None when it says nothing readable)."""
    try:
        return typing.get_type_hints(loader).get("return")
    except Exception:  # an annotation naming what its module can't resolve: not checked
        return None


def _check_trainable(spec: Spec, tree: space_lang.Group) -> None:
    # Imported here: the trainables pull in torch / OpenCV, which `tuner --help` doesn't need.
    from tuner.trainables import trainable_module

    try:
        trainable_module(spec.trainable).check_space(
            tree, metric=spec.metric, objectives=list(spec.objective_modes)
        )
    except space_lang.SpaceError as error:
        if error.path == "metric" and spec.objectives:  # the metric came from objectives
            raise space_lang.SpaceError("objectives.0", error.message) from None
        raise


def _check_together(spec: Spec, tree: space_lang.Group) -> None:
    """Settings valid one by one that together would be ignored or contradict each other."""
    if spec.objectives:
        [(name, mode)] = spec.objectives[0].items()
        if (spec.metric, spec.mode) != (name, mode):
            raise space_lang.SpaceError(
                "metric" if spec.metric != name else "mode",
                f"the first objective ({name}: {mode}) is the metric; remove metric: and mode:",
            )
    scheduler = spec.scheduler
    asha_only = [key for key in ASHA_ONLY if key in scheduler.model_fields_set]
    if scheduler.type == "fifo" and asha_only:  # only when written: the defaults are asha's
        raise space_lang.SpaceError(
            f"scheduler.{asha_only[0]}",
            "means nothing to scheduler.type fifo (only asha stops trials early); "
            "remove it or use type: asha",
        )
    if spec.objectives and spec.search.warm_start:
        raise space_lang.SpaceError(
            "search.warm_start",
            "carries earlier trials' value of one metric; a search with objectives needs every "
            "objective's: remove search.warm_start or objectives",
        )
    if spec.objectives and (spec.final.repeats or 1) > 1:
        raise space_lang.SpaceError(
            "final.repeats",
            "picks one config by its mean validation value; a search with objectives ends in "
            "a Pareto front: remove final.repeats or objectives",
        )
    _check_search(spec)
    # models/classical (features, kNN with torch on the CPU, SVM) never moves data to a GPU:
    # a GPU per trial would be reserved and left idle.
    if spec.trainable == "classical" and spec.resources.gpu > 0:
        raise space_lang.SpaceError(
            "resources.gpu",
            f"the classical trainable runs on CPUs only; set 0, got {spec.resources.gpu:g}",
        )
    # The deep trainable trains config['epochs'] epochs while ASHA stops at max_epochs.
    epochs = _largest(tree.children.get("epochs"))
    if epochs is not None and epochs > scheduler.max_epochs:
        raise space_lang.SpaceError(
            "space.epochs",
            f"up to {epochs:g} epochs exceeds scheduler.max_epochs ({scheduler.max_epochs}): a "
            "trial would have two epoch budgets; keep epochs <= max_epochs, or leave it out",
        )


# The packages (import names, as pip takes them too) a search choice needs beyond tuner's own.
NEEDS = {"cmaes": ("cmaes",), "bohb": ("hpbandster", "ConfigSpace")}


def _check_search(spec: Spec) -> None:
    """Search settings that only one algorithm reads, or that its scheduler contradicts."""
    search, scheduler = spec.search, spec.scheduler
    optuna_only = {"sampler", "startup_trials", "warm_start", "optuna_storage"}
    written = sorted(optuna_only & search.model_fields_set)
    if search.algorithm != "optuna" and written:
        raise space_lang.SpaceError(
            f"search.{written[0]}",
            f"only search.algorithm optuna has an Optuna study; got {search.algorithm}",
        )
    if search.sampler == "cmaes" and spec.objectives:
        raise space_lang.SpaceError(
            "search.sampler",
            "cmaes optimizes one objective; a search with objectives needs tpe or gp",
        )
    if search.algorithm == "bohb":
        # BOHB's HyperBand scheduler (HyperBandForBOHB) stops and resumes trials itself: its
        # brackets start at max_epochs / reduction_factor^k, so no grace period and no other type.
        contradicting = sorted({"type", "grace_period"} & scheduler.model_fields_set)
        if contradicting:
            raise space_lang.SpaceError(
                f"scheduler.{contradicting[0]}",
                "search.algorithm bohb runs its own HyperBand scheduler (max_epochs and "
                "reduction_factor only); remove it",
            )
        if spec.objectives:
            raise space_lang.SpaceError(
                "search.algorithm",
                "bohb optimizes one metric; a search with objectives needs optuna",
            )
    # Last: a spec that contradicts itself says so whether or not the packages are installed.
    key = "algorithm" if search.algorithm == "bohb" else "sampler"
    choice = getattr(search, key)
    missing = [name for name in NEEDS.get(choice, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise space_lang.SpaceError(
            f"search.{key}",
            f"{choice} needs {' and '.join(missing)}: pip install {' '.join(missing)}, or leave "
            f"search.{key} out (tuner's default)",
        )


def _largest(node: space_lang.Node | None) -> float | None:
    """The largest number a constant, range or choice can give (None: no numbers)."""
    if isinstance(node, space_lang.Const):
        values: list[Any] = [node.value]
    elif isinstance(node, space_lang.Int | space_lang.Float):
        values = [node.hi]
    elif isinstance(node, space_lang.Categorical):
        values = list(node.options)
    else:
        return None
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return max(numbers, default=None)


def _first_error(error: ValidationError) -> tuple[str, str]:
    """The key path of pydantic's first error, and a one-line message for it."""
    first = error.errors()[0]
    path = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return path, unknown_key(str(first["loc"][-1]), _allowed_keys(first["loc"]))
    if first["type"] == "literal_error":
        message = first["msg"].replace("Input should be", "must be")
        return path, f"{message}, got {first['input']!r}"
    message = first["msg"].removeprefix("Value error, ")
    return path, (f"{message}, got {first['input']!r}" if path else message)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Spec
    for part in loc[:-1]:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def apply_override(raw: dict[str, Any], override: str, source: str) -> None:
    """Apply ``key.path=value`` (value parsed as YAML) to the raw spec, in place."""
    key_path, sep, text = override.partition("=")
    if not sep or not key_path:
        raise SpecError(f"--set {override!r}: expected key.path=value, e.g. search.num_samples=20")
    node = raw
    *parents, leaf = key_path.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"--set {override!r}: `{part}` is not a mapping in {source}")
        node = child
    node[leaf] = read_yaml(text, f"--set {key_path}")
