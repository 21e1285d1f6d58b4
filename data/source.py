"""How to load a dataset, as a small value: what a trial on another machine needs to read it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from data.registry import Splits, load

PATH_OPTIONS = ("test_root",)  # loader options that name folders (image_folder's test split)


@dataclass(frozen=True)
class DataSource:
    """The arguments of ``data.load``: a few bytes to send where the images would be megabytes.

    ``load()`` reads ``root`` on the machine it runs on (``~`` is that machine's home) and makes
    the same splits as ``data.load`` anywhere else with these settings: same files, same splits.
    """

    dataset: str
    root: str | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    max_train: int | None = None
    max_test: int | None = None
    # Loader options (image_size, ...); a dict is unhashable, so equality alone tells sources
    # that differ only here apart.
    options: dict[str, Any] = field(default_factory=dict, hash=False)

    def anchored(self) -> DataSource:
        """This source with its relative folders (``root``, path options) made absolute from
        the current directory, for processes that run elsewhere (Ray trials run in their own
        directories); a ``~`` folder stays, to be each machine's own home."""
        options = {
            name: anchored_path(value) if name in PATH_OPTIONS else value
            for name, value in self.options.items()
        }
        return replace(self, root=anchored_path(self.root), options=options)

    def load(self) -> Splits:
        """Read and split the dataset here; raises DatasetError when it is missing or malformed."""
        return load(
            self.dataset,
            root=self.root,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
            max_train=self.max_train,
            max_test=self.max_test,
            **self.options,
        )

    def load_once(self) -> Splits:
        """``load()`` once per process: later calls with an equal source return the same Splits.

        One entry: a process (a Ray worker) serves one search, and a new source replaces the
        old one rather than keeping two datasets in memory.
        """
        if self not in LOADED:
            LOADED.clear()
            LOADED[self] = self.load()
        return LOADED[self]


def anchored_path(folder: Any) -> Any:
    """``folder`` (or file) made absolute from the current directory, for processes that run
    elsewhere; unset or ``~/...`` as it is (each machine's own home). The one anchoring rule."""
    if not isinstance(folder, str | Path) or not folder or str(folder).startswith("~"):
        return folder
    return str(Path(folder).absolute())


LOADED: dict[DataSource, Splits] = {}  # this process's loaded dataset (see load_once)
