"""A user's own package, written into a test's folder: a model (a factory and an nn.Module
class), a dataset loader and a training function with its test hook, each named in a spec by
import path. Every module notes the process that imported it, so a test can see a trial's worker
import it."""

from __future__ import annotations

from pathlib import Path

PACKAGE = "tuner_test_scans"  # unique: the modules stay imported for the rest of the session

NOTE = """
import os
from pathlib import Path

with open(Path(__file__).with_name("imported_by.txt"), "a") as _file:  # which processes
    _file.write(f"{os.getpid()}\\n")
"""

NETS = (
    NOTE
    + '''
from torch import nn


def wide_net(num_classes: int, in_channels: int, width: int = 32) -> nn.Module:
    """A factory that takes two of the three data arguments (not image_size)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(width, num_classes),
    )


class TinyNet(nn.Module):
    """An nn.Module class named directly; it takes float images 0..255."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)
        self.layers(__import__("torch").zeros(1, 1, 8, 8))  # materialise the lazy layer

    def forward(self, x):
        return self.head(self.layers(x / 255))
'''
)

DATA = (
    NOTE
    + '''
import numpy as np

from data import RawDataset


def load_scans(root, *, count: int = 300, classes: int = 3) -> RawDataset:
    """Three easy classes of 8x8 greyscale "scans" (brightness tells them apart)."""
    rng = np.random.default_rng(0)
    y = np.arange(count) % classes
    x = rng.random((count, 1, 8, 8)) * 60 + y[:, None, None, None] * (190 / classes)
    return RawDataset(x.astype(np.uint8), y.astype(np.int64), tuple(map(str, range(classes))))
'''
)

TRAIN = (
    NOTE
    + '''
import time

import torch
from torch import nn

import tuner
from tuner_test_scans.nets import TinyNet


def fit(config, data):
    """A plain loop: reports val_acc, val_loss and its own val_margin each epoch."""
    model = TinyNet(data.num_classes, config.get("width", 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    first = 0
    if state := tuner.checkpoint():
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first = state["epoch"]
    for epoch in range(first, config["epochs"]):
        while "pace" in config and int(Path(config["pace"]).read_text()) <= epoch:
            time.sleep(0.2)  # a paced search: the test allows each epoch (tests.helpers.Pace)
        for batch in torch.randperm(len(data.train_y)).split(32):
            x, y = data.train_x[batch].float(), data.train_y[batch]
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        time.sleep(config.get("sleep", 0))  # seconds: an epoch long enough to be killed in
        with torch.no_grad():
            logits = model(data.val_x.float())
        top2 = logits.topk(2).values
        metrics = {
            "val_acc": (logits.argmax(1) == data.val_y).float().mean().item(),
            "val_loss": nn.functional.cross_entropy(logits, data.val_y).item(),
            "val_margin": (top2[:, 0] - top2[:, 1]).mean().item(),
            "model_params": sum(p.numel() for p in model.parameters()),
        }
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        tuner.report(metrics, checkpoint={**state, "epoch": epoch + 1})


def test(config, checkpoint, data):
    model = TinyNet(data.num_classes, config.get("width", 16))
    model.load_state_dict(checkpoint["model"])
    return model
'''
)


def write_package(folder: Path) -> Path:
    """The package in ``folder`` (its parent: what a spec's folder or the cwd must be)."""
    package = folder / PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    for name, text in (("nets", NETS), ("data", DATA), ("train", TRAIN)):
        (package / f"{name}.py").write_text(text)
    return package


def importers(package: Path) -> set[int]:
    """The process ids that imported the package's modules."""
    path = package / "imported_by.txt"
    return {int(line) for line in path.read_text().split()} if path.exists() else set()
