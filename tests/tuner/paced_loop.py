"""A training function whose trials train only as far as the test lets them: before each epoch
it waits until the pace file (``config["pace"]``, written by the test) allows it. A test that
stops a tracking server or kills a driver mid-search decides when the epochs come, instead of
hoping that a slow network outlasts what it does on every machine.

Copied beside a spec by ``tests.helpers.paced_search``: tuner imports it from the spec's folder
(docs/own-code.md)."""

import time
from pathlib import Path

import torch
from torch import nn

import tuner

STEPS = 20  # full-batch steps an epoch: cheap; the pace decides how long a trial takes
POLL_S = 0.2


def allowed(pace: Path) -> int:
    """The epochs the test allows each trial to have trained (it writes the file whole)."""
    return int(pace.read_text())


class Net(nn.Module):
    """Logistic regression on images 0..255 (N, C, H, W)."""

    def __init__(self, data) -> None:
        super().__init__()
        self.linear = nn.Linear(data.train_x[0].numel(), data.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1).float() / 255)


def fit(config: dict, data) -> None:
    model = Net(data)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    first = 0
    if state := tuner.checkpoint():
        model.load_state_dict(state["model"])
        first = state["epoch"]
    x, y = data.train_x, data.train_y
    for epoch in range(first, config["epochs"]):
        while allowed(Path(config["pace"])) <= epoch:
            time.sleep(POLL_S)
        for _ in range(STEPS):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            logits = model(data.val_x)
        val_acc = (logits.argmax(1) == data.val_y).float().mean().item()
        checkpoint = {"model": model.state_dict(), "epoch": epoch + 1}
        tuner.report({"val_acc": val_acc, "train_loss": loss.item()}, checkpoint=checkpoint)


def test(config: dict, checkpoint: dict, data) -> nn.Module:
    model = Net(data)
    model.load_state_dict(checkpoint["model"])
    return model
