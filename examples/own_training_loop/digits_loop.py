"""A plain PyTorch training loop on digits, made tunable by one call a epoch: tuner.report."""

import torch
from torch import nn

import tuner


class Net(nn.Module):
    """A small CNN for 8x8 digits; it takes float images 0..255 (N, 1, 8, 8)."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(width * 16, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x / 255)


def fit(config: dict, data) -> None:
    """Train config["epochs"] epochs on data.train_x; report validation metrics each epoch."""
    model = Net(config["width"], data.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    first = 0
    if state := tuner.checkpoint():  # a trial resumed after a kill, or retried
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first = state["epoch"]
    for epoch in range(first, config["epochs"]):
        model.train()
        for batch in torch.randperm(len(data.train_y)).split(config["batch_size"]):
            x, y = data.train_x[batch].float(), data.train_y[batch]
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(data.val_x.float())
        metrics = {
            "val_acc": (logits.argmax(1) == data.val_y).float().mean().item(),
            "val_loss": nn.functional.cross_entropy(logits, data.val_y).item(),
            "train_loss": loss.item(),
        }
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        state["epoch"] = epoch + 1
        tuner.report(metrics, checkpoint=state)  # the one line that makes the loop tunable


def test(config: dict, checkpoint: dict, data) -> nn.Module:
    """The best trial's network, for tuner's one pass over the test split."""
    model = Net(config["width"], data.num_classes)
    model.load_state_dict(checkpoint["model"])
    return model
