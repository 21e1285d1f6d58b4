"""The `space:` language of a spec, and its translation for Optuna and Ray Tune.

This is the only module that knows the language. A space is a nested mapping whose leaves are

- a constant (any plain YAML value: a fixed setting);
- ``{loguniform: [lo, hi]}`` / ``{uniform: [lo, hi]}``: a float in [lo, hi];
- ``{int: [lo, hi]}`` with optional ``log: true``: an integer in [lo, hi], BOTH ends inclusive
  (Optuna's convention; Ray's ``randint`` excludes ``hi``, so we pass ``hi + 1`` to it);
- ``{choice: [a, b, ...]}``: one of the listed values;
- ``{choice: {branch: {...}, other: {...}}}``: conditional branches. The trial gets
  ``{name: branch, **branch's sub-space}``, so a parameter of one branch (``momentum`` under
  ``sgd``) never appears in a trial that took another (``adam``).

A trial's config comes out as a nested dict mirroring the space.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from ray import tune

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
SCALARS = (str, int, float, bool, type(None))
# The key under which OptunaSearch leaves its flat parameter names in a trial's config
# (it unflattens names on "/"): the trainable and the trackers ignore it.
OPTUNA_KEY = "_optuna"


class SpaceError(ValueError):
    """A malformed space; ``path`` is the dotted key path in the spec (``space.model.width``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


# ---------------------------------------------------------------------------------------------
# The parsed tree
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Const:
    value: Any


@dataclass(frozen=True)
class Float:
    lo: float
    hi: float
    log: bool


@dataclass(frozen=True)
class Int:
    lo: int
    hi: int  # inclusive
    log: bool


@dataclass(frozen=True)
class Categorical:
    options: tuple[Any, ...]


@dataclass(frozen=True)
class Branches:
    options: dict[str, Group]


@dataclass(frozen=True)
class Group:
    children: dict[str, Node]


Node = Const | Float | Int | Categorical | Branches | Group


def parse(raw: Mapping[str, Any], path: str = "space") -> Group:
    """Parse and validate a raw ``space:`` mapping; raises SpaceError naming the key path."""
    if not isinstance(raw, Mapping):
        raise SpaceError(path, f"must be a mapping of setting names, got {_kind(raw)}")
    return Group({str(key): _parse_node(value, f"{path}.{key}") for key, value in raw.items()})


def _parse_node(raw: Any, path: str) -> Node:
    if not isinstance(raw, Mapping):
        return Const(raw)
    keys = set(raw)
    kinds = keys & set(DISTRIBUTIONS)
    if not kinds:
        return parse(raw, path)
    if len(kinds) > 1 or keys - kinds - {"log"}:
        raise SpaceError(
            path,
            f"a distribution has exactly one of {', '.join(DISTRIBUTIONS)} "
            f"(plus `log` for int); got keys {sorted(map(str, keys))}",
        )
    (kind,) = kinds
    if "log" in raw and kind != "int":
        raise SpaceError(path, f"`log` applies to `int` only (use loguniform instead of {kind})")
    if kind == "choice":
        return _parse_choice(raw["choice"], f"{path}.choice")
    lo, hi = _bounds(raw[kind], f"{path}.{kind}", integer=kind == "int")
    if kind == "int":
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise SpaceError(f"{path}.log", f"must be true or false, got {log!r}")
        if log and lo <= 0:
            raise SpaceError(path, f"int with log: true needs lo >= 1, got [{lo}, {hi}]")
        return Int(int(lo), int(hi), log)
    if kind == "loguniform" and lo <= 0:
        raise SpaceError(path, f"loguniform needs 0 < lo <= hi, got [{lo}, {hi}]")
    return Float(float(lo), float(hi), kind == "loguniform")


def _bounds(raw: Any, path: str, *, integer: bool) -> tuple[float, float]:
    what = "integers" if integer else "numbers"
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise SpaceError(path, f"must be a list of two {what} [lo, hi], got {raw!r}")
    lo, hi = (_number(value, path, integer=integer) for value in raw)
    if lo > hi:
        raise SpaceError(path, f"needs lo <= hi, got [{lo}, {hi}]")
    return lo, hi


def _number(value: Any, path: str, *, integer: bool) -> float:
    # bool is an int subclass in Python; `true` is never meant as a bound.
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value):
        raise SpaceError(
            path, f"bounds must be finite {'integers' if integer else 'numbers'}, got {value!r}"
        )
    return value


def _parse_choice(raw: Any, path: str) -> Node:
    if isinstance(raw, Mapping):
        if not raw:
            raise SpaceError(path, "needs at least one branch")
        branches = {}
        for name, sub in raw.items():
            sub = {} if sub is None else sub
            if not isinstance(sub, Mapping):
                raise SpaceError(
                    f"{path}.{name}", f"a branch must be a mapping (or empty), got {_kind(sub)}"
                )
            if "name" in sub:
                raise SpaceError(
                    f"{path}.{name}.name", "is set from the branch's own key; remove it"
                )
            branches[str(name)] = parse(sub, f"{path}.{name}")
        return Branches(branches)
    if not isinstance(raw, list) or not raw:
        raise SpaceError(
            path, f"must be a non-empty list of values or a mapping of branches, got {raw!r}"
        )
    for index, option in enumerate(raw):
        if isinstance(option, Mapping):
            raise SpaceError(
                f"{path}[{index}]",
                "mappings can't be list options: use named branches, `choice: {name: {...}}`",
            )
    return Categorical(tuple(raw))


def _kind(value: Any) -> str:
    return {list: "a list", dict: "a mapping", str: "a string"}.get(
        type(value), type(value).__name__
    )


# ---------------------------------------------------------------------------------------------
# Walking the tree
# ---------------------------------------------------------------------------------------------


def is_continuous(node: Node) -> bool:
    return isinstance(node, Float)


def leaves(group: Group, path: str = "space") -> Iterator[tuple[str, Node]]:
    """Every non-mapping node with its key path, through every branch."""
    for key, node in group.children.items():
        here = f"{path}.{key}"
        if isinstance(node, Group):
            yield from leaves(node, here)
        elif isinstance(node, Branches):
            yield here, node
            for name, sub in node.options.items():
                yield from leaves(sub, f"{here}.choice.{name}")
        else:
            yield here, node


def sampled_keys(group: Group, prefix: str = "", *, common_only: bool = False) -> list[str]:
    """The config keys a search varies (``optimizer.name``, ``optimizer.lr``), each once.

    With ``common_only``, a branch's keys count only when every branch has them (a progress
    table can't show ``momentum`` for a trial whose optimizer has none).
    """
    keys: list[str] = []
    for key, node in group.children.items():
        here = f"{prefix}{key}"
        if isinstance(node, Group):
            found = sampled_keys(node, f"{here}.", common_only=common_only)
        elif isinstance(node, Branches):
            per_branch = [
                sampled_keys(sub, f"{here}.", common_only=common_only)
                for sub in node.options.values()
            ]
            found = [f"{here}.name"] + [k for keys_ in per_branch for k in keys_]
            if common_only:
                found = [k for k in found if k == f"{here}.name" or all(k in b for b in per_branch)]
        else:
            found = [] if isinstance(node, Const) else [here]
        keys += [k for k in dict.fromkeys(found) if k not in keys]
    return keys


def possible_values(node: Node) -> list[Any]:
    """The values a constant or categorical node can take ([] for ranges and sub-spaces)."""
    if isinstance(node, Const):
        return [node.value]
    if isinstance(node, Categorical):
        return list(node.options)
    return []


def variants(node: Node | None) -> list[tuple[str | None, dict[str, Node]]]:
    """The shapes a named setting (``model``, ``optimizer``) can take: ``(name, other keys)``.

    A branch choice gives one shape per branch; a plain mapping gives one shape whose name is
    its ``name`` constant (or None when unnamed); anything else gives no shape.
    """
    if isinstance(node, Branches):
        return [(name, sub.children) for name, sub in node.options.items()]
    if isinstance(node, Group):
        children = dict(node.children)
        name = children.pop("name", None)
        names = possible_values(name) if name is not None else [None]
        return [(value, children) for value in names]
    if isinstance(node, Const) and isinstance(node.value, Mapping):
        children = {key: Const(value) for key, value in node.value.items() if key != "name"}
        return [(node.value.get("name"), children)]
    return []


# ---------------------------------------------------------------------------------------------
# Translations
# ---------------------------------------------------------------------------------------------


def optuna_define_by_run(space: Group) -> Callable[[optuna.Trial], dict[str, Any]]:
    """A define-by-run function for ``OptunaSearch``: samples the space, returns the config.

    Optuna parameter names are dotted key paths with the branch name included
    (``optimizer.sgd.lr``), so two branches' ``lr`` are separate parameters to the sampler.
    """
    return _DefineByRun(space)


@dataclass(frozen=True)
class _DefineByRun:
    # A class, not a closure: Tune pickles the searcher (with this) into its experiment state.
    space: Group

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        return _sample_group(self.space, _PrefixedTrial(trial), "")


class _PrefixedTrial:
    """Names every Optuna parameter under OPTUNA_KEY, so the returned config stays clean."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def float(self, name: str, lo: float, hi: float, log: bool) -> float:
        return self.trial.suggest_float(f"{OPTUNA_KEY}/{name}", lo, hi, log=log)

    def int(self, name: str, lo: int, hi: int, log: bool) -> int:
        return self.trial.suggest_int(f"{OPTUNA_KEY}/{name}", lo, hi, log=log)

    def categorical(self, name: str, options: list[Any]) -> Any:
        return self.trial.suggest_categorical(f"{OPTUNA_KEY}/{name}", options)


def _sample_group(group: Group, trial: _PrefixedTrial, prefix: str) -> dict[str, Any]:
    return {key: _sample(node, trial, f"{prefix}{key}") for key, node in group.children.items()}


def _sample(node: Node, trial: _PrefixedTrial, name: str) -> Any:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Float):
        return trial.float(name, node.lo, node.hi, node.log)
    if isinstance(node, Int):
        return trial.int(name, node.lo, node.hi, node.log)
    if isinstance(node, Categorical):
        # Optuna's categorical takes scalars only: lists (e.g. blocks per stage) go as JSON.
        encoded = [_encode(option) for option in node.options]
        return _decode(trial.categorical(name, encoded))
    if isinstance(node, Branches):
        branch = trial.categorical(name, list(node.options))
        return {"name": branch, **_sample_group(node.options[branch], trial, f"{name}.{branch}.")}
    return _sample_group(node, trial, f"{name}.")


def _encode(option: Any) -> Any:
    return option if isinstance(option, SCALARS) else json.dumps(option)


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


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


def check_grid(space: Group) -> None:
    """Grid search needs a finite space: every leaf a constant, choice or int range."""
    for path, node in leaves(space):
        if is_continuous(node):
            raise SpaceError(
                path,
                "grid search can't enumerate a continuous distribution; "
                "use `choice: [...]` of values, or search.algorithm optuna/random",
            )


def trial_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial config flattened to ``optimizer.lr`` style names (for MLflow params, tables)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == OPTUNA_KEY:
            continue
        if isinstance(value, Mapping):
            for sub_key, sub_value in trial_params(value).items():
                flat[f"{key}.{sub_key}"] = sub_value
        else:
            flat[key] = value
    return flat


def clean_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial config without the searcher's bookkeeping key."""
    return {key: value for key, value in config.items() if key != OPTUNA_KEY}
