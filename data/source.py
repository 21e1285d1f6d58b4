"""How to load a dataset, as a small value: what a trial on another machine needs to read it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from data import cache
from data.files import ImageFiles
from data.registry import RawDataset, read
from data.splits import Splits, split_rows, splits_of
from data.storage import KeepIn, Placement, place

PATH_OPTIONS = ("test_root",)  # loader options that name folders (image_folder's test split)


@dataclass(frozen=True)
class DataSource:
    """The arguments of ``data.load``: a few bytes to send where the images would be megabytes.

    ``load()`` reads ``root`` on the machine it runs on (``~`` is that machine's home) and makes
    the same splits as ``data.load`` anywhere else with these settings: same files, same splits.
    ``keep_in``: where decoded image files are kept (``data.storage``); ``cache_dir``: the
    node's cache of them (``data.cache``; unset: ``~/.cache/tuner/images``).
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
    keep_in: KeepIn = "auto"
    cache_dir: str | None = None

    def anchored(self) -> DataSource:
        """This source with its relative folders (``root``, path options, ``cache_dir``) made
        absolute from the current directory, for processes that run elsewhere (Ray trials run
        in their own directories); a ``~`` folder stays, to be each machine's own home."""
        options = {
            name: anchored_path(value) if name in PATH_OPTIONS else value
            for name, value in self.options.items()
        }
        return replace(
            self,
            root=anchored_path(self.root),
            options=options,
            cache_dir=anchored_path(self.cache_dir),
        )

    def read(self) -> RawDataset | ImageFiles:
        """What the loader returns here: decoded arrays, or image files still to decode."""
        return read(self.dataset, self.root, **self.options)

    def placement(self, dataset: RawDataset | ImageFiles) -> Placement:
        """Where ``dataset``'s images are kept under ``keep_in`` on this machine, and why."""
        return place(dataset, self.keep_in)

    def split(
        self,
        dataset: RawDataset | ImageFiles,
        where: str = "memory",
        say: cache.Say | None = cache.to_stderr,
    ) -> Splits:
        """``dataset`` split as these settings say, its images kept ``where`` (memory or the
        node's cache: then the splits are sent to other processes as this source)."""
        labels = dataset.labels if isinstance(dataset, ImageFiles) else dataset.y
        rows = split_rows(
            labels,
            fixed=dataset.split if isinstance(dataset, ImageFiles) else None,
            test_labels=dataset.test_y if isinstance(dataset, RawDataset) else None,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
            max_train=self.max_train,
            max_test=self.max_test,
        )
        cache_dir = self.cache_dir or cache.DEFAULT_DIR
        splits = splits_of(
            dataset, rows, name=self.dataset, where=where, cache_dir=cache_dir, say=say
        )
        if where == "cache":
            return replace(splits, reopen=replace(self, keep_in="cache").load_once)
        return splits

    def load(self, say: cache.Say | None = cache.to_stderr) -> Splits:
        """Read and split the dataset here; raises DatasetError when it is missing or malformed."""
        dataset = self.read()
        return self.split(dataset, self.placement(dataset).where, say)

    def load_once(self) -> Splits:
        """``load()`` once per process: later calls with an equal source return the same Splits.

        One entry: a process (a Ray worker) serves one search, and a new source replaces the
        old one rather than keeping two datasets in memory.
        """
        if self not in LOADED:
            LOADED.clear()
            LOADED[self] = self.load()
        return LOADED[self]


def load(
    name: str,
    *,
    root: str | Path | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    keep_in: KeepIn = "auto",
    cache_dir: str | None = None,
    **options: object,
) -> Splits:
    """Load dataset ``name`` and split it: stratified, seeded, test never used for selection.

    ``test_fraction`` applies only to datasets without their own test split. ``max_train`` /
    ``max_test`` take a stratified subset (of train+val before splitting, and of test), for quick
    searches and tests. Image files are decoded into memory or the node's cache (``keep_in``).
    """
    root = str(root) if root is not None else None
    return DataSource(
        name,
        root,
        val_fraction,
        test_fraction,
        seed,
        max_train,
        max_test,
        dict(options),
        keep_in,
        cache_dir,
    ).load()


def cached_source(splits: Splits) -> DataSource | None:
    """The source that splits kept in a node's cache are opened from on any node (what a trial
    is sent); None for splits in memory."""
    owner = getattr(splits.reopen, "__self__", None)  # reopen: a source's bound load_once
    return owner if isinstance(owner, DataSource) else None


def anchored_path(folder: Any) -> Any:
    """``folder`` (or file) made absolute from the current directory, for processes that run
    elsewhere; unset, ``~/...`` or a URI as it is (each machine's own home, or everyone's
    store). The one anchoring rule."""
    if not isinstance(folder, str | Path) or not folder or str(folder).startswith("~"):
        return folder
    if "://" in str(folder):
        return folder
    return str(Path(folder).absolute())


LOADED: dict[DataSource, Splits] = {}  # this process's loaded dataset (see load_once)
