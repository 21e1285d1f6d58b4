"""The `space:` language of a spec (``tuner.search.searchers`` translates it for Optuna and
Ray Tune).

This is the only module that parses the language. A space is a nested mapping whose leaves are

- a constant (any plain YAML value: a fixed setting);
- ``{loguniform: [lo, hi]}`` / ``{uniform: [lo, hi]}``: a float in [lo, hi];
- ``{int: [lo, hi]}`` with optional ``log: true``: an integer in [lo, hi], BOTH ends inclusive
  (Optuna's convention; Ray's ``randint`` excludes ``hi``, so we pass ``hi + 1`` to it);
- ``{choice: [a, b, ...]}``: one of the listed values;
- ``{choice: {branch: {...}, other: {...}}}``: conditional branches. The trial gets
  ``{name: branch, **branch's sub-space}``, so a parameter of one branch (``momentum`` under
  ``sgd``) never appears in a trial that took another (``adam``).

A trial's config comes out as a nested dict mirroring the space. A sampled setting has one name
wherever a user sees it (Optuna, MLflow, the tables, the plots; see ``named``): its config
path, dotted (``model.width``), with a branch's own settings under the branch
(``optimizer.sgd.lr``), so two branches' ``lr`` never share a name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
SCALARS = (str, int, float, bool, type(None))


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


def named(
    group: Group,
    taken: Callable[[tuple[str, ...]], Any] | None = None,
    prefix: str = "",
    path: tuple[str, ...] = (),
) -> Iterator[tuple[str, tuple[str, ...], Node]]:
    """``(name, path in a trial's config, node)`` of every setting: the one naming of them.

    A name is the config path, dotted (``model.width``), except that a branch's own settings go
    under the branch (``optimizer.sgd.lr``); the branch taken is ``optimizer.name``.
    ``taken(path of a branch's name)`` says which branch a trial took (only that one is walked);
    without it, every branch is.
    """
    for key, node in group.children.items():
        name, here = f"{prefix}{key}", (*path, key)
        if isinstance(node, Group):
            yield from named(node, taken, f"{name}.", here)
        elif isinstance(node, Branches):
            yield f"{name}.name", (*here, "name"), node
            branches = node.options if taken is None else [taken((*here, "name"))]
            for branch in branches:
                if branch in node.options:
                    yield from named(node.options[branch], taken, f"{name}.{branch}.", here)
        else:
            yield name, here, node


def sampled_keys(group: Group, *, common_only: bool = False) -> list[str]:
    """The names of the settings a search varies (``optimizer.name``, ``optimizer.sgd.lr``).

    With ``common_only``, those every trial has: not in a branch, so named by their config path
    (what a progress table looks up).
    """
    return [
        name
        for name, path, node in named(group)
        if not isinstance(node, Const) and not (common_only and name != ".".join(path))
    ]


def trial_params(group: Group, config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's config under the names of ``named`` (MLflow params, tables, plots)."""
    at = partial(_at, config)
    found = {name: at(path) for name, path, _ in named(group, at)}
    return {name: value for name, value in found.items() if value is not _MISSING}


_MISSING = object()


def _at(config: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        config = config.get(key, _MISSING) if isinstance(config, Mapping) else _MISSING
    return config


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


def check_grid(space: Group) -> None:
    """Grid search needs a finite space: every leaf a constant, choice or int range."""
    for path, node in leaves(space):
        if is_continuous(node):
            raise SpaceError(
                path,
                "grid search can't enumerate a continuous distribution; "
                "use `choice: [...]` of values, or search.algorithm optuna/random",
            )
