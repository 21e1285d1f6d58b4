"""Load-time checks of a space against what a trainable accepts, shared by every trainable.

What a section accepts is read from the code that consumes it: a dataclass's fields, a
function's or class's parameters, with their type annotations (``Literal["auto", "small"]``,
``int``, ``Sequence[int]``). A name and its allowed values are written once, where they are
used, and a bad one fails here, naming its key path, before Ray or MLflow start. Whether a
value fits a type is ``models.options.admits`` (pydantic), as when the consumer is built through
its registry; checks that need more than a type (a schedule's ``gamma > 0`` in its
``__post_init__``) stay with the consumer, and run here once per value drawn.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from models.options import Registry, admits, describe
from tuner.core.errors import unknown_key
from tuner.spec import space as space_lang


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
    known: Registry[Any],
    options_of: Callable[[str], Mapping[str, Any]] | None = None,
    builds: bool = False,
) -> None:
    """Check a ``{name: ..., options}`` setting: a name in ``known``, and options that name
    accepts (``options_of(name)``, else the registry's: each option's type), with values of
    their types; with ``builds``, values ``known[name]`` (a class) takes."""
    options_of = options_of or known.option_types
    node = tree.children.get(key)
    branched = isinstance(node, space_lang.Branches)
    for name, children in space_lang.variants(node):
        path = f"space.{key}.choice.{name}" if branched else f"space.{key}"
        if name is None:
            raise space_lang.SpaceError(
                f"{path}.name", f"missing; known: {', '.join(sorted(known))}"
            )
        if name not in known:
            raise space_lang.SpaceError(path if branched else f"{path}.name", known.unknown(name))
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
