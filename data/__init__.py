"""Datasets for tuner: a registry of loaders, each giving train / val / test splits.

A loader returns small data decoded (``RawDataset``) or a collection still in files
(``ImageFiles``: an image folder, a manifest; local paths or URIs). ``load`` splits on the
labels, then keeps the images as uint8 tensors (N, C, H, W): in memory, or, for collections
larger than memory, decoded once into each node's cache and memory-mapped (``data.cache``).
Models and trainers convert to float on their own device, a batch at a time.
This package never imports Ray or MLflow.
"""

from data import loaders  # noqa: F401  (registers the built-in datasets)
from data.errors import DatasetError
from data.files import ImageFiles
from data.registry import DATASETS, RawDataset, read, register
from data.source import DataSource, anchored_path, cached_source, load
from data.splits import Splits
from data.storage import KeepIn, Placement

__all__ = [
    "DATASETS",
    "DataSource",
    "DatasetError",
    "ImageFiles",
    "KeepIn",
    "Placement",
    "RawDataset",
    "Splits",
    "anchored_path",
    "cached_source",
    "load",
    "read",
    "register",
]
