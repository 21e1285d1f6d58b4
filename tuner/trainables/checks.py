"""Load-time checks of a space against what a trainable accepts, shared by every trainable."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tuner import space as space_lang
from tuner.spec import Spec, unknown_key


def check_metric(spec: Spec, reported: Sequence[str]) -> None:
    """The metric is one the trainable reports on the validation split: the search never
    selects on training numbers (and the test split is touched only after the search)."""
    allowed = ", ".join(name for name in reported if name.startswith("val_"))
    if spec.metric in reported and not spec.metric.startswith("val_"):
        raise space_lang.SpaceError(
            "metric",
            f"the search selects on validation metrics; allowed: {allowed}, got {spec.metric!r}",
        )
    if spec.metric not in reported:
        raise space_lang.SpaceError("metric", f"must be one of {allowed}, got {spec.metric!r}")


def check_keys(tree: space_lang.Group, key: str, allowed: Sequence[str]) -> None:
    """The settings under ``key`` (the whole space when "") are all in ``allowed``."""
    prefix = f"space.{key}." if key else "space."
    node: space_lang.Node | None = tree if not key else tree.children.get(key)
    for _, children in space_lang.variants(node):
        for option in children:
            if option not in allowed:
                raise space_lang.SpaceError(f"{prefix}{option}", unknown_key(option, allowed))


def check_named(
    tree: space_lang.Group,
    key: str,
    known: Mapping[str, Any],
    options_of: Callable[[str], list[str]],
) -> None:
    """Check a ``{name: ..., options}`` setting: a known name, and options that name accepts."""
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
        allowed = options_of(name)
        for option in children:
            if option not in allowed:
                raise space_lang.SpaceError(f"{path}.{option}", unknown_key(option, allowed))
