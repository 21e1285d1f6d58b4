"""The user's own code a spec names by import path (``"my_pkg.nets:wide_net"``): where it is
imported from, which settings name it, and the line `tuner run` prints about it.

A spec that names an import path runs that code, as Hydra's ``_target_`` does: its module is
imported when the spec is checked (to read the options from its signature) and in every trial.
It is imported from the *code path*: the spec file's folder, then the current directory (after
the installed packages, so a folder can't shadow one). The search records its code path, so
`tuner resume` and `tuner repeat` import from the same folders, and every trial's worker puts
it on its own ``sys.path`` (``tuner.trainables.on_code_path``).

``models.options`` (imported inside the functions: ``models`` imports torch) resolves the names.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def code_path(spec_file: Path) -> tuple[str, ...]:
    """The folders a spec's own code is imported from: the spec file's, then the current one."""
    folders = (str(spec_file.parent.absolute()), str(Path.cwd()))
    return tuple(dict.fromkeys(folders))  # once each, in order


def own_names(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (key path, import path) a raw spec mapping names, in the order written: its
    trainable, its dataset, and names in its space (a constant, a choice, a branch's key)."""
    from models.options import is_import_path

    return [(path, value) for path, value in _strings(raw, "") if is_import_path(value)]


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, Mapping):
        for key, child in node.items():
            where = f"{path}.{key}" if path else str(key)
            yield where, str(key)  # a branch named by its import path
            yield from _strings(child, where)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _strings(child, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def imported_line(names: list[tuple[str, str]]) -> str:
    """``tuner: your code: data.dataset my_pkg.data:load (/home/me/my_pkg/data.py), ...``: what
    the spec made tuner import, and from which file (once imported)."""
    described = []
    for path, name in names:
        module = sys.modules.get(name.partition(":")[0])
        where = getattr(module, "__file__", None) or "not imported"
        described.append(f"{path} {name} ({where})")
    return f"tuner: your code: {', '.join(described)}"
