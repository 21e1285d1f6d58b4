"""mf-prior-bench's MF-Hartmann as a training function, for bench_searchers.py: a benchmark
nobody here wrote, searched through tuner (``trainable: "mf_hartmann:fit"``, your own training
function).

The function's fidelity is the epoch: epoch ``e`` of ``epochs`` reports the function's value at
fidelity ``ceil(e / epochs * 100)`` of its 1..100, so a trial's last epoch is the true (noiseless,
unbiased) Hartmann value and its early epochs the biased, noisy low fidelities that ASHA and
HyperBand stop on. The value is reported as ``val_loss`` (the search minimises it; the known
optimum is ``optimum(name)``). mf-prior-bench needs no download: the function is a formula.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import mfpbench
from torch import nn

import tuner

FUNCTION = "mfh6"  # 6 dimensions, mf-prior-bench's default bias (0.5) and noise (0.1)


@functools.cache
def benchmark(name: str) -> Any:
    """mf-prior-bench's benchmark ``name`` (``mfh3``, ``mfh6``, ``mfh6_good``, ...)."""
    return mfpbench.get(name)


def dimensions(name: str = FUNCTION) -> int:
    """How many ``X_i`` the function takes (each in [0, 1])."""
    return len(benchmark(name).space)


def optimum(name: str) -> float:
    """The function's known minimum, at its highest fidelity."""
    function = benchmark(name)
    return float(function.query(function.optimum, at=function.end).error)


def value(name: str, xs: dict[str, float], fidelity: int) -> float:
    """The function at ``xs`` (``X_0``.. ``X_{d-1}``) and ``fidelity`` (1..100)."""
    return float(benchmark(name).query(xs, at=fidelity).error)


def fit(config: dict[str, Any]) -> None:
    """One report per epoch: the value at that epoch's fidelity. A paused trial (HyperBand's)
    continues from the epoch it reported last."""
    name, epochs = config.get("function", FUNCTION), config["epochs"]
    top = benchmark(name).end
    xs = {key: float(x) for key, x in config.items() if key.startswith("X_")}
    state = tuner.checkpoint()
    for epoch in range(state["epoch"] if state else 0, epochs):
        fidelity = max(1, math.ceil((epoch + 1) / epochs * top))
        tuner.report({"val_loss": value(name, xs, fidelity)}, checkpoint={"epoch": epoch + 1})


def test(config: dict[str, Any], checkpoint: Any, data: Any) -> nn.Module:
    """What tuner tests once at the end: a linear layer on 8x8 digits (untrained; the bench
    reads validation values only)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
