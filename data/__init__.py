"""Datasets for tuner: a registry of loaders, each giving train / val / test splits.

Images are kept as uint8 tensors (N, C, H, W) so a whole small dataset fits in memory and
can be shared between trials; models and trainers convert to float on their own device.
This package never imports Ray or MLflow.
"""

from data import loaders  # noqa: F401  (registers the built-in datasets)
from data.registry import DATASETS, DatasetError, RawDataset, Splits, load, register
from data.source import DataSource, anchored_path

__all__ = [
    "DATASETS",
    "DataSource",
    "DatasetError",
    "RawDataset",
    "Splits",
    "anchored_path",
    "load",
    "register",
]
