"""Load-time checks of a space against what a trainable accepts, shared by every trainable.

What a section accepts is read from the code that consumes it: a dataclass's fields, a
function's or class's parameters, with their type annotations (``Literal["auto", "small"]``,
``int``, ``Sequence[int]``). A name and its allowed values are written once, where they are
used, and a bad one fails here, naming its key path, before Ray or MLflow start. Checks that
need more than a type (a dropout in [0, 1), a positive width) stay with the consumer, at build
time.
"""

from __future__ import annotations

import difflib
import inspect
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from models.registry import Range
from tuner.core.errors import unknown_key
from tuner.spec import space as space_lang

# The types of the values YAML reads (a tuple passes for a list: the checks take either).
YAML_TYPES = (str, int, float, bool, type(None), list, tuple, Mapping)
# Parameters that can come from a config: passed by keyword, and not ``*args`` / ``**kwargs``.
BY_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def check_metric(metric: str, reported: Sequence[str]) -> None:
    """The metric is one the trainable reports on the validation split: the search never
    selects on training numbers (and the test split is touched only after the search)."""
    allowed = ", ".join(name for name in reported if name.startswith("val_"))
    if metric in reported and not metric.startswith("val_"):
        raise space_lang.SpaceError(
            "metric",
            f"the search selects on validation metrics; allowed: {allowed}, got {metric!r}",
        )
    if metric not in reported:
        raise space_lang.SpaceError("metric", f"must be one of {allowed}, got {metric!r}")


def check_objectives(objectives: Sequence[str], costs: Sequence[str]) -> None:
    """After the first objective (the metric, see check_metric) come costs of the model that
    the trainable reports before training: a second validation metric would be read at which
    epoch? (the checkpoint keeps the first objective's best)."""
    for index, name in enumerate(objectives[1:], 1):
        if name not in costs:
            raise space_lang.SpaceError(
                f"objectives.{index}",
                f"after the first objective come model costs this trainable reports: one of "
                f"{', '.join(costs)}; got {name!r}",
            )


def option_types(
    consumer: Callable[..., Any], names: Iterable[str] | None = None
) -> dict[str, Any]:
    """The options ``consumer`` (a function, a class, a dataclass) takes, each with its type
    annotation (``Any`` where it has none): ``names`` only, else every keyword parameter."""
    parameters = inspect.signature(consumer, eval_str=True).parameters
    if names is None:
        names = [name for name, parameter in parameters.items() if parameter.kind in BY_KEYWORD]
    empty = inspect.Parameter.empty
    return {
        name: Any if parameters[name].annotation is empty else parameters[name].annotation
        for name in names
    }


def check_keys(
    tree: space_lang.Group,
    key: str,
    accepted: Mapping[str, Any],
    build: Callable[..., Any] | None = None,
) -> None:
    """The settings under ``key`` (the whole space when "") are all in ``accepted`` (a name's
    type), with values of that type, each of which ``build`` (the section's consumer) takes."""
    prefix = f"space.{key}" if key else "space"
    node: space_lang.Node | None = tree if not key else tree.children.get(key)
    branched = isinstance(node, space_lang.Branches)
    for name, children in space_lang.variants(node):
        path = f"{prefix}.choice.{name}" if branched else prefix
        check_options(path, children, accepted, build)


def check_named(
    tree: space_lang.Group,
    key: str,
    known: Mapping[str, Any],
    options_of: Callable[[str], Mapping[str, Any]],
    builds: bool = False,
) -> None:
    """Check a ``{name: ..., options}`` setting: a known name, and options that name accepts
    (``options_of(name)``: each option's type), with values of their types; with ``builds``,
    values ``known[name]`` (a class) takes."""
    node = tree.children.get(key)
    branched = isinstance(node, space_lang.Branches)
    for name, children in space_lang.variants(node):
        path = f"space.{key}.choice.{name}" if branched else f"space.{key}"
        if name is None:
            raise space_lang.SpaceError(
                f"{path}.name", f"missing; known: {', '.join(sorted(known))}"
            )
        if name not in known:
            raise space_lang.SpaceError(
                path if branched else f"{path}.name",
                f"unknown {key} {name!r}; known: {', '.join(sorted(known))}",
            )
        check_options(path, children, options_of(name), known[name] if builds else None)


def check_options(
    path: str,
    children: Mapping[str, space_lang.Node],
    accepted: Mapping[str, Any],
    build: Callable[..., Any] | None = None,
) -> None:
    """Every option under ``path`` is one of ``accepted`` and can only take values of its type
    and, given the consumer ``build``, values it takes (the other options at their defaults):
    its own checks (a probability above 1) run here, once, rather than fail every trial."""
    for option, node in children.items():
        if option not in accepted:
            raise space_lang.SpaceError(f"{path}.{option}", unknown_key(option, list(accepted)))
        check_value(f"{path}.{option}", node, accepted[option])
        for where, value in drawn_values(node) if build else ():
            try:
                build(**{option: value})
            except ValueError as error:
                raise space_lang.SpaceError(f"{path}.{option}{where}", str(error)) from None


def check_value(path: str, node: space_lang.Node, expected: Any) -> None:
    """Refuse a setting whose constant, choice options or range ends ``expected`` doesn't admit.

    A range is checked at its ends only: both are values it draws (an int range over a
    ``Literal[0, 2]`` passes with 1 inside it; the consumer then refuses 1 at build time).
    """
    if isinstance(node, space_lang.Group | space_lang.Branches):
        if not admits(expected, {}):  # any mapping: an annotation takes all or none of them
            raise space_lang.SpaceError(path, not_a_mapping(node, expected))
        return
    for where, value in drawn_values(node):
        if not admits(expected, value):
            raise space_lang.SpaceError(
                f"{path}{where}", f"must be {describe(expected)}, got {value!r}"
            )


def drawn_values(node: space_lang.Node) -> list[tuple[str, Any]]:
    """A value node's values to check, each with where it is written (after the setting's path)."""
    if isinstance(node, space_lang.Categorical):
        return [(f".choice[{index}]", option) for index, option in enumerate(node.options)]
    if isinstance(node, space_lang.Int):
        return [(".int", node.lo), (".int", node.hi)]
    if isinstance(node, space_lang.Float):
        kind = "loguniform" if node.log else "uniform"
        return [(f".{kind}", node.lo), (f".{kind}", node.hi)]
    return [("", node.value)] if isinstance(node, space_lang.Const) else []


def not_a_mapping(node: space_lang.Group | space_lang.Branches, expected: Any) -> str:
    """Why a mapping can't set a plain value: most often a misspelt sampler (``integer:``)."""
    keys = list(node.children) if isinstance(node, space_lang.Group) else []
    close = [
        (key, match[0])
        for key in keys
        if (match := difflib.get_close_matches(key, space_lang.DISTRIBUTIONS, n=1))
    ]
    hint = f" (did you mean `{close[0][1]}` for `{close[0][0]}`?)" if close else ""
    return (
        f"must be {describe(expected)}, not a mapping; to sample it use one of "
        f"{', '.join(space_lang.DISTRIBUTIONS)}{hint}"
    )


# ---------------------------------------------------------------------------------------------
# Types, as far as a YAML value needs them
# ---------------------------------------------------------------------------------------------


def admits(expected: Any, value: Any) -> bool:
    """Whether a YAML ``value`` is of type ``expected``; a type this can't read admits all."""
    origin, args = get_origin(expected), get_args(expected)
    if expected is Any or expected is object:
        return True
    if origin is Literal:
        # Compared with their types: YAML's `1` is not `True`, nor `1.0` the integer 1.
        return any(value == arg and type(value) is type(arg) for arg in args)
    if origin is Annotated:  # a type and where its numbers live: Annotated[float, DROPOUT]
        return admits(args[0], value) and all(r.admits(value) for r in ranges(expected))
    if origin is Union or origin is types.UnionType:
        return any(admits(arg, value) for arg in args)
    if expected is float:  # a number: YAML writes 1 for 1.0
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:  # bool is an int subclass in Python; `true` is never meant as a number
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple, Sequence):
        items = item_types(expected, len(value)) if isinstance(value, list | tuple) else None
        return items is not None and all(map(admits, items, value))
    if isinstance(origin or expected, type):  # str, bool, NoneType, Path, Mapping, ...
        return isinstance(value, origin or expected)
    return True


def ranges(annotated: Any) -> list[Range]:
    """The ``Range`` bounds in an ``Annotated`` type's metadata."""
    return [meta for meta in get_args(annotated)[1:] if isinstance(meta, Range)]


def item_types(expected: Any, length: int) -> list[Any] | None:
    """The type of each item of a list of ``length`` items; None if a fixed-size tuple's type
    (``tuple[float, float]``) wants another length."""
    args = get_args(expected)
    if is_fixed_tuple(expected):
        return list(args) if len(args) == length else None
    return [args[0] if args else Any] * length


def is_fixed_tuple(expected: Any) -> bool:
    args = get_args(expected)
    return get_origin(expected) is tuple and bool(args) and args[-1] is not Ellipsis


def describe(expected: Any) -> str:
    """``expected`` as a message says it: ``one of 'auto', 'small'``, ``an integer or null``."""
    origin, args = get_origin(expected), get_args(expected)
    if origin is Literal:
        return f"one of {', '.join(yaml_repr(arg) for arg in args)}"
    if origin is Annotated:
        return " ".join([describe(args[0]), *map(str, ranges(expected))])
    if origin is Union or origin is types.UnionType:
        # Members no YAML value can be (a Tensor, a Path) would only confuse a spec's author.
        return " or ".join(describe(arg) for arg in args if not is_class_beyond_yaml(arg))
    if is_fixed_tuple(expected):
        return f"a list of {len(args)} ({', '.join(describe(arg) for arg in args)})"
    if origin in (list, tuple, Sequence):
        return f"a list (each item {describe(args[0]) if args else 'anything'})"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if expected in words:
        return words[expected]
    if expected is type(None):
        return "null"
    if isinstance(origin or expected, type) and issubclass(origin or expected, Mapping):
        return "a mapping"
    return f"a {getattr(expected, '__name__', expected)}"


def yaml_repr(value: Any) -> str:
    """A Literal's value as YAML writes it: true, false, null; strings quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else repr(value)


def is_class_beyond_yaml(expected: Any) -> bool:
    return isinstance(expected, type) and not issubclass(expected, YAML_TYPES)
