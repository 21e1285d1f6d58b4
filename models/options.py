"""Registries of factories by name, and what a factory's options may be, read from its signature.

Every name a spec writes (a model, a dataset, a classical step, an optimizer, a schedule) maps
to a factory in a ``Registry``; the factory's keyword parameters are its options, their defaults
and annotations (``Literal[...]``, ``Annotated[int, POSITIVE]``) written once, there. Whether a
value fits an annotation is pydantic's answer (``admits``), the same when a spec is loaded
(``tuner.trainables.checks``) and when a factory is built (``Registry.build``), so the check
cannot drift from the signature; ``describe`` says the annotation in a one-line message.

A name may also be an import path, ``"my_pkg.nets:wide_net"``: the user's own factory (a
function or a class), looked up in every registry the same way and with the same checks from its
signature (``import_object``). Its module is imported from ``sys.path`` and the ``CODE_PATH``
folders (tuner's: the spec's folder and the current directory); the arguments the caller supplies
(``fixed``: a model's data arguments, a loader's root) are passed only when it takes them.

It lives in ``models`` because everything that needs it can import it from here: ``data`` and
``tuner`` (``models`` imports neither, so there is no cycle) and a served classical pipeline,
which ships the ``models`` package alone (``tuner.publishing.export``). It imports pydantic and
NumPy, no Ray, MLflow or tuner.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import math
import re
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, cast, get_args, get_origin

import annotated_types
import numpy
from pydantic import (
    AllowInfNan,
    ConfigDict,
    PydanticSchemaGenerationError,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

F = TypeVar("F", bound=Callable[..., Any])
# Parameters that can come from a config: passed by keyword, and not ``*args`` / ``**kwargs``.
BY_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
# The types of the values YAML reads (a tuple passes for a list).
YAML_TYPES = (str, int, float, bool, type(None), list, tuple, Mapping)
# Strict: YAML's `true` is no integer, nor `2.0` or "2"; a Tensor in torch's annotations is an
# arbitrary type (a YAML value is never one).
STRICT = ConfigDict(strict=True, arbitrary_types_allowed=True)


class OptionError(ValueError):
    """An unknown name, an unknown option or a value its annotation refuses (one line)."""


@dataclass(frozen=True)
class Range(annotated_types.GroupedMetadata):
    """Where a number option lives, written once in its annotation (``dropout: Annotated[float,
    DROPOUT]``); pydantic reads it as the bounds it yields, finite numbers only."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __iter__(self) -> Iterator[object]:
        yield annotated_types.Gt(self.low) if self.low_open else annotated_types.Ge(self.low)
        if not math.isinf(self.high):
            yield annotated_types.Lt(self.high) if self.high_open else annotated_types.Le(self.high)
        yield AllowInfNan(False)

    def __str__(self) -> str:
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


POSITIVE = Range(1)  # counts: widths, depths, blocks
DROPOUT = Range(0, 1, high_open=True)  # a probability of dropping, never all
# "package.module:attribute" (the attribute may be dotted: "module:Class.create"), as entry
# points, uvicorn and Hydra's ``_target_`` name code; a colon is in no registered name.
IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


# The folders the user's code is imported from besides the installed packages (use_code_path).
CODE_PATH: list[str] = []


def use_code_path(folders: Iterable[str]) -> None:
    """Import the user's code from ``folders`` too: appended to ``sys.path``, so an installed
    package keeps its name (a folder can't shadow torch). Idempotent: a trial's worker calls it
    for every trial."""
    for folder in folders:
        if folder not in CODE_PATH:
            CODE_PATH.append(folder)
        if folder not in sys.path:
            sys.path.append(folder)


def is_import_path(name: object) -> bool:
    """Whether ``name`` names the user's own code, ``"package.module:attribute"``."""
    return isinstance(name, str) and IMPORT_PATH.match(name) is not None


def _defined_in(owner: Any) -> list[str]:
    """The public names ``owner`` (a module, a class) defines itself, not those it imports."""
    names = [name for name in vars(owner) if not name.startswith("_")]
    home = owner.__name__ if isinstance(owner, types.ModuleType) else owner.__module__
    own = [name for name in names if getattr(vars(owner)[name], "__module__", None) == home]
    return sorted(own or names)[:12]


def import_object(path: str, error: type[ValueError] = OptionError) -> Any:
    """The object ``"package.module:attribute"`` names, its module imported from ``sys.path``
    (this runs the module's code); a module or attribute that isn't there is one ``error`` line
    saying where Python looked."""
    module_name, _, attributes = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as missing:
        if missing.name and module_name.startswith(missing.name):  # the module itself
            where = ", ".join(CODE_PATH) or "the current directory"
            raise error(
                f"no module {missing.name!r} to import {path!r} from, in {where} or the "
                "installed packages: put it there, or pip install its package"
            ) from None
        raise error(f"importing {path!r} failed: {missing}") from None  # a module it imports
    except Exception as failure:  # the module's own code failed: its first line says why
        raise error(f"importing {path!r} failed: {type(failure).__name__}: {failure}") from None
    found: Any = module
    for part in attributes.split("."):
        if not hasattr(found, part):
            public = _defined_in(found)
            raise error(
                f"{module_name} ({getattr(module, '__file__', '?')}) has no {part!r}; "
                f"it has: {', '.join(public) or '(nothing public)'}"
            )
        found = getattr(found, part)
    return found


class Registry(dict[str, F]):
    """Names to factories. Looking up an unknown name raises ``error`` listing the known ones;
    a factory's options are its keyword parameters except ``fixed`` (what the caller supplies:
    a model's data arguments, a loader's root)."""

    def __init__(
        self,
        kind: str,
        entries: Mapping[str, F] | None = None,
        *,
        plural: str | None = None,
        error: type[ValueError] = OptionError,
        fixed: Iterable[str] = (),
    ) -> None:
        super().__init__(entries or {})
        self.kind, self.plural = kind, plural or f"{kind}s"
        self.error, self.fixed = error, tuple(fixed)

    def __missing__(self, name: str) -> F:
        if is_import_path(name):
            return self._own(name)
        raise self.error(self.unknown(name))

    def __contains__(self, name: object) -> bool:
        """A registered name, or an import path that imports to a callable."""
        if not is_import_path(name):
            return super().__contains__(name)
        try:
            self._own(cast(str, name))
        except self.error:
            return False
        return True

    def unknown(self, name: object) -> str:
        """The one message for a name not registered (an import path: why it didn't import)."""
        if is_import_path(name):
            try:
                self._own(cast(str, name))
            except self.error as error:
                return str(error)
        return f"unknown {self.kind} {name!r}; known {self.plural}: {', '.join(sorted(self))}"

    def _own(self, path: str) -> F:
        """The user's factory at ``path``, taking only the ``fixed`` arguments it declares."""
        factory = import_object(path, self.error)
        if not callable(factory):
            raise self.error(
                f"{self.kind} {path!r} is a {type(factory).__name__}, not a function or class"
            )
        return cast(F, taking_what_it_declares(factory, self.fixed))

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: make a factory known by ``name``."""

        def add(factory: F) -> F:
            if name in self:
                raise self.error(f"{self.kind} {name!r} is registered twice")
            self[name] = factory
            return factory

        return add

    def defaults(self, name: str) -> dict[str, Any]:
        """The options of ``name`` with their defaults, in signature order."""
        parameters = inspect.signature(self[name]).parameters
        return {option: parameters[option].default for option in self._options(name)}

    def option_types(self, name: str) -> dict[str, Any]:
        """The options of ``name`` with their annotations (``Any`` where there is none)."""
        return option_types(self[name], self._options(name))

    def check(self, name: str, options: Mapping[str, Any]) -> None:
        """Raise ``error`` for an unknown ``name``, an option it doesn't take or a value its
        annotation refuses."""
        accepted = self.option_types(name)
        for option, value in options.items():
            if option not in accepted:
                raise self.error(
                    f"unknown option {option!r} for {self.kind} {name!r}; "
                    f"allowed: {', '.join(accepted) or '(none)'}"
                )
            check_option(option, value, accepted[option], self.error)

    def build(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """``name``'s factory called with ``args`` and ``kwargs``, its options checked first."""
        self.check(name, {key: value for key, value in kwargs.items() if key not in self.fixed})
        return self[name](*args, **kwargs)

    def _options(self, name: str) -> list[str]:
        parameters = inspect.signature(self[name]).parameters.items()
        return [o for o, p in parameters if p.kind in BY_KEYWORD and o not in self.fixed]


def taking_what_it_declares(factory: F, fixed: Sequence[str]) -> F:
    """``factory`` called with only those of the ``fixed`` arguments (given by name, or by
    position in ``fixed``'s order) its signature declares: a user's model may ignore the image
    size, a loader its root. Its signature stays the factory's (``__wrapped__``)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: called as it is
        return factory
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unused = [name for name in fixed if name not in parameters]
    if takes_any or not unused:
        return factory

    @functools.wraps(factory)
    def call(*args: Any, **kwargs: Any) -> Any:
        if len(args) > len(fixed):  # not a registry's call: as it was written
            return factory(*args, **kwargs)
        named = {**dict(zip(fixed, args, strict=False)), **kwargs}
        return factory(**{key: value for key, value in named.items() if key not in unused})

    return cast(F, call)


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


def check_option(
    option: str, value: object, expected: Any, error: type[ValueError] = OptionError
) -> None:
    """Raise a one-line ``error`` unless ``expected`` admits ``value``."""
    if not admits(expected, value):
        raise error(f"option {option}={value!r} is not allowed; must be {describe(expected)}")


def check_arguments(consumer: Callable[..., Any], values: Mapping[str, Any]) -> None:
    """``values`` (an estimator's ``get_params()``) each admitted by ``consumer``'s annotation:
    what ``set_params`` sets, checked at ``fit`` as scikit-learn does."""
    accepted = option_types(consumer, values)
    for option, value in values.items():
        check_option(option, value, accepted[option])


# ---------------------------------------------------------------------------------------------
# Types, as far as a YAML value needs them
# ---------------------------------------------------------------------------------------------


def admits(expected: Any, value: Any) -> bool:
    """Whether ``value`` is of type ``expected``, by pydantic in strict mode; a type pydantic
    can't read (a callable) admits all."""
    adapter = _adapter(expected)
    if adapter is None:
        return True
    try:
        try:
            text = json.dumps(value, default=_plain)
        except TypeError:  # not a YAML value (a Path, a Tensor): Python's types decide
            adapter.validate_python(value)
        else:  # as JSON: a YAML list passes for a tuple, which strict Python mode refuses
            adapter.validate_json(text)
    except ValidationError:
        return False
    return True


def _plain(value: object) -> object:
    """A NumPy number (a sampler's, a scikit-learn grid's) as the Python number it stands for."""
    if isinstance(value, numpy.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a YAML value")


@functools.cache
def _adapter(expected: Any) -> TypeAdapter[Any] | None:
    try:
        return TypeAdapter(_exact_literals(expected), config=STRICT)
    except PydanticSchemaGenerationError:
        return None


def _exact_literals(expected: Any) -> Any:
    """``expected`` with each ``Literal`` compared by type too: pydantic takes 1 for True."""
    origin, args = get_origin(expected), get_args(expected)
    if origin is Literal:
        return Annotated[expected, WrapValidator(_same_type)]
    if origin is Annotated:
        return Annotated[(_exact_literals(args[0]), *expected.__metadata__)]
    if origin is Union or origin is types.UnionType:
        return Union[tuple(map(_exact_literals, args))]  # noqa: UP007  (a tuple of members)
    return expected


def _same_type(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    result = handler(value)
    if type(result) is not type(value):
        raise ValueError(f"{value!r} is a {type(value).__name__}")
    return result


def ranges(annotated: Any) -> list[Range]:
    """The ``Range`` bounds in an ``Annotated`` type's metadata."""
    return [meta for meta in get_args(annotated)[1:] if isinstance(meta, Range)]


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
