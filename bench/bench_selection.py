"""Which statistic of a trial's validation history should choose the best trial?

Issue 31: on digits' 288 validation images the default search chose a trial for one epoch's
val_acc of 1.0000 (its other late epochs ~0.993) and it tested below earlier runs. Each search
here runs as `tuner run` runs it (Optuna TPE + ASHA, recorded in MLflow); then every candidate
rule below picks a trial from the same Tune histories, and each picked trial is trained again
with its config and seed (the replay checks it reproduces the recorded history) to test the
weights that rule would test: the best epoch's for the old rule, the last epoch's for the
others. It prints each seed's test accuracy per rule, then a table of the mean over seeds.

    .venv/bin/python bench/bench_selection.py                  # digits x5 + fashion x3, ~35 min
    .venv/bin/python bench/bench_selection.py --seeds 1 --fashion-seeds 0 \\
        --set search.num_samples=2 --set scheduler.max_epochs=3 --set scheduler.grace_period=1
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bench_search  # its Fashion-MNIST subset (this folder is on sys.path: a script)
import ray
import torch
import yaml
from ray import tune

from tuner.commands import run as runner
from tuner.search import inputs
from tuner.search.ray_start import RayStart
from tuner.spec.document import Spec, apply_override, load_spec, read_yaml, validate
from tuner.trainables import deep

DIGITS = Path(__file__).resolve().parent.parent / "search_spaces" / "digits.yaml"
# bench_search.py's Fashion-MNIST subset (600 validation images), at its ASHA trial count.
FASHION_TRIALS = 24


def _mean_of_last(k: int) -> Callable[[Sequence[float]], float]:
    return lambda history: statistics.fmean(history[-k:])


# name -> (the statistic a trial is ranked by (higher is better: val_acc), the epoch tested).
# The old rule tests the best epoch's weights (what the checkpoint kept); the others the last.
RULES: dict[str, tuple[Callable[[Sequence[float]], float], Callable[[Sequence[float]], int]]] = {
    "best epoch (old)": (max, lambda history: max(range(len(history)), key=history.__getitem__)),
    "last epoch": (lambda history: history[-1], lambda history: len(history) - 1),
    "mean of last 2": (_mean_of_last(2), lambda history: len(history) - 1),
    "mean of last 3": (_mean_of_last(3), lambda history: len(history) - 1),
    "mean of last 5": (_mean_of_last(5), lambda history: len(history) - 1),
}


def search(folder: Path, spec: Spec, raw: dict[str, Any]) -> list[Any]:
    """One search as `tuner run` runs it, in a fresh store; Tune's results of its trials."""
    folder.mkdir()
    os.chdir(folder)
    spec_path = folder / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{folder}/mlflow.db"
    summary = runner.run_search(
        spec,
        spec_path,
        tracking_uri=uri,
        ray_start=RayStart(None, forward_worker_output=False),  # the first search starts Ray
        storage=f"{folder}/tune",
    )
    return list(tune.ResultGrid(tune.ExperimentAnalysis(summary.storage)))


def history_of(result: Any, metric: str) -> list[float]:
    frame = result.metrics_dataframe
    if frame is None or metric not in frame or result.metrics.get("rejected"):
        return []
    return [float(v) for v in frame[metric] if math.isfinite(v)]


def replay(result: Any, epochs: int, spec: Spec, splits: Any) -> tuple[list[float], list[float]]:
    """The trial trained again as it was (its config, the search's seed, one thread as Ray gave
    it): val_acc and test_acc after each of ``epochs`` epochs."""
    torch.set_num_threads(1)
    trial = deep.TrainingRun(result.config, splits, inputs.trial_settings(spec))
    vals, tests = [], []
    for _ in range(epochs):
        vals.append(trial.train_and_validate()["val_acc"])
        logits = trial.predict(splits.test_x)
        tests.append(float((logits.argmax(1).cpu() == splits.test_y).float().mean()))
    return vals, tests


def picks(results: list[Any], metric: str) -> dict[str, tuple[Any, int]]:
    """Each rule's chosen trial (ties: trial id, as tuner ranks) and the epoch it tests."""
    histories = {r.metrics["trial_id"]: (r, history_of(r, metric)) for r in results}
    chosen = {}
    for name, (statistic, tested) in RULES.items():
        ranked = sorted(
            ((-statistic(h), trial_id) for trial_id, (_, h) in histories.items() if h),
        )
        result, history = histories[ranked[0][1]]
        chosen[name] = (result, tested(history))
    return chosen


def bench(label: str, spec: Spec, raw: dict[str, Any], folder: Path) -> dict[str, float]:
    """One seed: every rule's test accuracy (and a line saying what each chose)."""
    started = time.perf_counter()
    results = search(folder, spec, raw)
    splits = inputs.load_data(spec)
    chosen = picks(results, spec.metric)
    replays: dict[str, tuple[list[float], list[float]]] = {}
    tests = {}
    for name, (result, epoch) in chosen.items():
        trial_id = result.metrics["trial_id"]
        history = history_of(result, spec.metric)
        if trial_id not in replays:
            replays[trial_id] = replay(result, len(history), spec, splits)
            drift = max(abs(a - b) for a, b in zip(replays[trial_id][0], history, strict=True))
            if drift > 1e-6:
                print(f"  {trial_id}: the replay's val_acc differs by up to {drift:.4f}")
        tests[name] = replays[trial_id][1][epoch]
        print(
            f"  {name:<18} {trial_id}  val {RULES[name][0](history):.4f} "
            f"(epoch {epoch + 1} of {len(history)})  test {tests[name]:.4f}",
            flush=True,
        )
    print(f"{label}: {time.perf_counter() - started:.0f} s; {splits.sizes}", flush=True)
    return tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="digits searches")
    parser.add_argument("--fashion-seeds", type=int, default=3, help="Fashion-MNIST searches")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="on every spec"
    )
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    # One folder for the whole bench, and the first search's cwd: Ray starts its workers in
    # the directory the driver had when Ray started, so it must outlive every search.
    root = Path(tempfile.mkdtemp(prefix="bench_selection_"))
    table: dict[str, dict[str, list[float]]] = {}
    for dataset, seeds in (("digits", args.seeds), ("fashion", args.fashion_seeds)):
        for seed in range(seeds):
            if dataset == "digits":
                raw = read_yaml(DIGITS.read_text(), str(DIGITS))
                load_spec(DIGITS)  # the file as users run it is valid
            else:
                raw = read_yaml(bench_search.SPACE, "bench_search.py")
                raw["name"] = "bench_selection_fashion"
                raw["search"]["num_samples"] = FASHION_TRIALS
            for override in [*args.set, f"search.seed={seed}"]:
                apply_override(raw, override, "bench_selection.py")
            spec = validate(raw, "bench_selection.py")
            tests = bench(f"{dataset} seed {seed}", spec, raw, root / f"{dataset}{seed}")
            for name, value in tests.items():
                table.setdefault(dataset, {}).setdefault(name, []).append(value)
    ray.shutdown()
    shutil.rmtree(root)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\n{'rule':<18}" + "".join(f"{d + ' test_acc (mean; per seed)':>48}" for d in table))
    for name in RULES:
        cells = []
        for runs in table.values():
            values = runs[name]
            each = " ".join(f"{v:.4f}" for v in values)
            cells.append(f"{statistics.fmean(values):.4f} ({each})")
        print(f"{name:<18}" + "".join(f"{cell:>48}" for cell in cells))


if __name__ == "__main__":
    main()
