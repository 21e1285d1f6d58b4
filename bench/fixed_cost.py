"""A training function of known, fixed cost, for bench_many_trials.py: the same work under
tuner (``trainable: "fixed_cost:fit"``, your own training function) and under plain Ray Tune
(``plain``).

Each epoch waits ``cost_s`` seconds (a sleep: the trials leave the driver its CPU, so what the
bench sees is bookkeeping, not a fight for cores), reports a metric made from the sampled ``x``,
and saves a small checkpoint, as a real trial does.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune
from torch import nn

import tuner

STATE_NUMBERS = 1000  # the checkpoint: a state of this many float32 numbers (4 kB)


def _epoch(config: dict[str, Any], epoch: int) -> tuple[dict[str, float], dict[str, Any]]:
    time.sleep(config["cost_s"])
    x = float(config["x"])
    metrics = {"val_acc": x * (1 - 0.5 / (epoch + 1)), "val_loss": 1 - x}
    return metrics, {"epoch": epoch, "weights": torch.full((STATE_NUMBERS,), x)}


def fit(config: dict[str, Any]) -> None:
    """Under tuner: one report per epoch through ``tuner.report``."""
    for epoch in range(config["epochs"]):
        metrics, state = _epoch(config, epoch)
        tuner.report(metrics, checkpoint=state)


def test(config: dict[str, Any], checkpoint: Any, data: Any) -> nn.Module:
    """The network tuner tests once at the end: a linear layer on 8x8 digits (untrained)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def plain(config: dict[str, Any]) -> None:
    """Under plain Ray Tune: the same epochs, metric and checkpoint through ``tune.report``."""
    for epoch in range(config["epochs"]):
        metrics, state = _epoch(config, epoch)
        with tempfile.TemporaryDirectory() as directory:
            torch.save(state, Path(directory) / "checkpoint.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
