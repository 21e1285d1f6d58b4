"""Does the default search (Optuna + ASHA; Optuna's GP up to 250 trials) find good configs faster
than random search?

Runs the same search with four searcher / scheduler pairs, each with several seeds, on a
Fashion-MNIST subset whose space has bad corners (learning rates that diverge or crawl, tiny
nets, heavy dropout), all with the same per-trial epoch budget (ASHA pairs get 3x the trials,
about the same epochs in all), and compares their anytime curves (the best validation
accuracy so far, against epochs trained and against wall time; ``tuner/publishing/anytime.py``,
read back from MLflow as ``tuner run`` records it). It prints each pair's final best and
epochs per seed, saves the median curves as a PNG, and ends with one line: the
epochs the default needed to reach random + FIFO's final best, against the epochs random + FIFO
trained, as a median over seeds with the spread.

Ray is started once; each search writes to its own MLflow store in a temporary folder. Wall
times include each search's closing phase (test evaluation, plots, export) only in the total.

    .venv/bin/python bench/bench_search.py             # 4 pairs x 5 seeds, ~80 min on 2 cores
    .venv/bin/python bench/bench_search.py --seeds 2 --num-samples 8 --out /tmp/anytime.png
    .venv/bin/python bench/bench_search.py --default-and-baseline --first-seed 3 --seeds 2
    .venv/bin/python bench/bench_search.py --default-and-baseline \\
        --variant scheduler.reduction_factor=3 --variant scheduler.reduction_factor=2
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import ray
import yaml
from mlflow.tracking import MlflowClient

from tuner.commands import run as runner
from tuner.publishing.anytime import Point, epochs_to_reach, search_curve
from tuner.search.ray_start import RayStart
from tuner.spec.document import Spec, apply_override, read_yaml, validate
from tuner.tracking.records import latest_parent

SPACE = """\
name: bench_search
data: {dataset: fashion_mnist, max_train: 2000, val_fraction: 0.3, max_test: 1000, seed: 0}
metric: val_acc
search: {num_samples: 16, max_concurrent: 2}
scheduler: {max_epochs: 9}  # ASHA's grace period and reduction factor: tuner's defaults
resources: {cpu: 1}
space:
  model:
    name: simple_cnn
    width: {int: [4, 64], log: true}
    depth: {int: [1, 3]}
    dropout: {uniform: [0.0, 0.7]}
  optimizer:
    choice:
      sgd: {lr: {loguniform: [1e-4, 1.0]}, momentum: {uniform: [0.0, 0.99]}}
      adam: {lr: {loguniform: [1e-5, 1e-1]}}
  batch_size: {choice: [32, 64, 128, 256]}
  schedule: {name: cosine}
"""
# Every pair gets about the same epochs in all: FIFO trains each trial for the whole budget,
# ASHA stops most early, so it gets ASHA_TRIALS_PER_FIFO_TRIAL times the trials (16 x 9 = 144
# epochs for FIFO; 48 trials under ASHA's rungs at 1 and 4 epochs train 150 to 210).
ASHA_TRIALS_PER_FIFO_TRIAL = 3
PAIRS = {  # label -> (search.algorithm, scheduler.type, `--set` overrides); default first
    "optuna + asha (default)": ("optuna", "asha", ()),
    "random + fifo": ("random", "fifo", ()),
    "random + asha": ("random", "asha", ()),
    "optuna + fifo": ("optuna", "fifo", ()),
}
DEFAULT, BASELINE = "optuna + asha (default)", "random + fifo"


def run_one(
    folder: Path,
    algorithm: str,
    scheduler: str,
    overrides: tuple[str, ...],
    seed: int,
    num_samples: int,
) -> list[Point]:
    """One search in a fresh store under ``folder``; its anytime curve."""
    raw = read_yaml(SPACE, "bench_search.py")
    if scheduler == "asha":
        num_samples *= ASHA_TRIALS_PER_FIFO_TRIAL
    raw["search"].update(algorithm=algorithm, seed=seed, num_samples=num_samples)
    raw["scheduler"]["type"] = scheduler
    for override in overrides:
        apply_override(raw, override, "bench_search.py")
    spec = validate(raw, "bench_search.py")
    folder.mkdir()
    spec_path = folder / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    return run_spec(folder, spec, spec_path)


def run_spec(folder: Path, spec: Spec, spec_path: Path) -> list[Point]:
    """One search of ``spec`` (read from ``spec_path``) in a fresh store in the existing
    ``folder``; its anytime curve. Ray starts with the first search (and is reused after)."""
    os.chdir(folder)
    uri = f"sqlite:///{folder}/mlflow.db"
    runner.run_search(
        spec,
        spec_path,
        tracking_uri=uri,
        ray_start=RayStart(None, forward_worker_output=False),  # the first search starts Ray
        storage=f"{folder}/tuner_results",
    )
    client = MlflowClient(uri)
    return search_curve(client, latest_parent(client, spec.experiment))


def best_at(curve: list[Point], x: float, key: str) -> float:
    """The running best at ``x`` epochs or seconds (nan before the first result)."""
    values = [p.best for p in curve if getattr(p, key) <= x]
    return values[-1] if values else float("nan")


def plot(curves: dict[str, list[list[Point]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True, layout="constrained")
    for ax, key, label in ((axes[0], "epochs", "epochs trained"), (axes[1], "seconds", "seconds")):
        for name, runs in curves.items():
            end = max(getattr(run[-1], key) for run in runs)
            xs = [end * i / 200 for i in range(1, 201)]
            medians = [statistics.median(best_at(run, x, key) for run in runs) for x in xs]
            ax.plot(xs, medians, label=name)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best val_acc so far (median over seeds)")
    axes[0].legend()
    figure.suptitle("Anytime curves on a Fashion-MNIST subset")
    figure.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds count up from it")
    parser.add_argument("--num-samples", type=int, default=16, help="trials under FIFO")
    parser.add_argument("--out", type=Path, default=Path("bench_search.png"))
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also run the default with this setting: a search setting (startup_trials=4) or "
        "any spec path (scheduler.reduction_factor=4); repeatable",
    )
    parser.add_argument(
        "--default-and-baseline",
        action="store_true",
        help="only the default (and its --variant runs) and random + FIFO: the one-line answer",
    )
    args = parser.parse_args()
    others = {"random + asha", "optuna + fifo"} if args.default_and_baseline else set()
    pairs = {name: pair for name, pair in PAIRS.items() if name not in others}
    for variant in args.variant:
        key = variant.partition("=")[0]
        override = variant if "." in key else f"search.{variant}"
        pairs[f"optuna + asha, {variant}"] = ("optuna", "asha", (override,))
    out = args.out.absolute()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    curves: dict[str, list[list[Point]]] = {name: [] for name in pairs}
    # One folder for the whole bench, and the first search's cwd: Ray starts its workers in
    # the directory the driver had when Ray started, so it must outlive every search.
    root = Path(tempfile.mkdtemp(prefix="bench_search_"))
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for index, (name, (algorithm, scheduler, overrides)) in enumerate(pairs.items()):
            started = time.perf_counter()
            folder = root / f"seed{seed}_{index}"
            curve = run_one(folder, algorithm, scheduler, overrides, seed, args.num_samples)
            curves[name].append(curve)
            print(
                f"seed {seed} {name}: best {curve[-1].best:.4f} after {curve[-1].epochs} "
                f"epochs, {curve[-1].seconds:.0f} s of search "
                f"({time.perf_counter() - started:.0f} s in all)",
                flush=True,
            )
    ray.shutdown()
    shutil.rmtree(root)
    plot(curves, out)
    print(f"anytime curves: {out}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name in [DEFAULT, *(name for name in pairs if name not in PAIRS)]:
        print(epochs_needed(name, curves[name], curves[BASELINE]))


def epochs_needed(name: str, runs: list[list[Point]], baselines: list[list[Point]]) -> str:
    """The line that answers the bench: the epochs ``name`` needed to reach the baseline's
    final best, as a share of the baseline's epochs (median over seeds, and each seed)."""
    needed, spent = [], []
    for curve, baseline in zip(runs, baselines, strict=True):
        reached = epochs_to_reach(curve, baseline[-1].best, "max")
        needed.append(reached / baseline[-1].epochs if reached else math.inf)  # inf: never
        spent.append(baseline[-1].epochs)
    shares = ", ".join(f"{share:.2f}" for share in needed)
    return (
        f"{name} reached {BASELINE}'s final best with {statistics.median(needed):.2f}x its "
        f"epochs (median of {len(needed)} seeds; per seed {shares}; "
        f"{BASELINE} trained {statistics.median(spent):.0f} epochs)"
    )


if __name__ == "__main__":
    main()
