"""tuner: hyperparameter search for image classifiers (YAML spec -> Ray Tune -> MLflow).

Your own training function (``trainable: "my_pkg.train:fit"`` in a spec) calls two functions
of this package: ``tuner.report(metrics, checkpoint=state)`` once per epoch, and
``tuner.checkpoint()`` for the state to continue from (docs/own-code.md). They are imported on
first use: `tuner --help` and a plain `import tuner` stay light.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Any

__version__ = "0.1.0"
__all__ = ["checkpoint", "report"]
TRAINING_API = ("checkpoint", "report")  # tuner.trainables.function's, for your function


def __getattr__(name: str) -> Any:
    """``tuner.report`` and ``tuner.checkpoint`` (PEP 562: imported when first asked for)."""
    if name in TRAINING_API:
        from tuner.trainables import function

        return getattr(function, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")


OWN_PACKAGES = ("data", "models")  # tuner's siblings, installed beside it


class _OwnPackages(importlib.abc.MetaPathFinder):
    """Finds tuner's own ``data`` and ``models`` beside this package, before any other finder.

    `python -m tuner` puts the working directory first on sys.path, and the folders people keep
    there under those names (their images, their saved models) were imported instead, as empty
    namespace packages: an editable install's finder is asked only after every sys.path entry.
    """

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in OWN_PACKAGES:
            return None
        folder = Path(__file__).resolve().parent.parent / fullname
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


if not any(isinstance(finder, _OwnPackages) for finder in sys.meta_path):
    sys.meta_path.insert(0, _OwnPackages())
