"""The fast recipe trained alone and inside a real tuner trial: same accuracy, and the wall time
the trial's machinery adds.

For each seed, on the same data and the same config (airbench94's recipe, ``recipe_config``):

- alone: ``deep.TrainingRun`` built directly, its epochs looped as a trial loops them (train,
  validate, keep the best epoch's weights), then that epoch tested;
- in a trial: a one-trial ``tuner run`` (``runner.run_search``; fifo scheduler, no retrain: the
  best checkpoint is tested) into a fresh MLflow store and Tune storage in a temporary folder.

Prints each one's test accuracy and wall time (mean ± std over the seeds) and the ratios of the
wall times: the trial's own time (Tune's ``time_total_s``: start to last report, checkpoints
included) to the alone loop's, and the whole command's (Tune's loop, MLflow, the test, the
model export) to all of alone. Ray starts before any clock runs, like a cluster already up.
Target: the trial's accuracy within noise of alone's, at <= 1.1x its wall time.

    .venv/bin/python bench/bench_recipe.py                    # Fashion-MNIST, 10,000 images
    .venv/bin/python bench/bench_recipe.py --max-train 1000 --max-test 500 --epochs 1 --seeds 1
    .venv/bin/python bench/bench_recipe.py --dataset cifar10 --root ~/datasets/cifar10 \\
        --max-train 0 --batch-size 1024 --compile           # airbench94 itself, on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

# torch, Ray and tuner are imported in the functions, after the arguments are read: --device
# cpu must hide the GPU before torch starts.
SEEDS = 3
EPOCHS = 10  # airbench94 trains 9.9 epochs of CIFAR-10
BATCH_SIZE = 512  # airbench's 1024 leaves too few steps on a 10,000-image subset


def recipe_config(epochs: int, batch_size: int, compile_: bool) -> dict[str, Any]:
    """airbench94's recipe as a trial config, in tuner's units (see deep.build_optimizer)."""
    return {
        "model": {"name": "airbench"},  # widths 64, 256, 256
        "data_init": 5000,  # images that set the whitening layer
        "optimizer": {
            "name": "sgd",
            "lr": 1.5,  # per 1024 examples: airbench's 11.5 less Nesterov's gain at 0.85
            "lr_per_examples": 1024,
            "momentum": 0.85,
            "nesterov": True,
            "weight_decay": round(0.0153 / 11.5, 6),  # airbench's 0.0153 per 1024 examples
            "bias_lr_scale": 64,
        },
        "schedule": {"name": "onecycle"},
        "batch_size": batch_size,
        "epochs": epochs,
        "label_smoothing": 0.2,
        "augment": {"crop_padding": 2, "padding_mode": "reflect", "hflip": "alternate"},
        "ema": {"decay": 0.8, "every": 5},  # airbench94 has lookahead instead; ~25 steps
        "tta": {"flip": True, "translate": 1},
        "compile": compile_,
    }


def spec_text(args: argparse.Namespace, seed: int, gpus: int) -> str:
    """A one-trial spec for ``config`` (constants only, so the search has one point)."""
    spec = {
        "name": "bench_recipe",
        "trainable": "deep",
        "data": {
            "dataset": args.dataset,
            "seed": 0,
            "max_train": args.max_train or None,
            "max_test": args.max_test or None,
        },
        "metric": "val_acc",
        "mode": "max",
        "search": {"algorithm": "random", "num_samples": 1, "seed": seed},
        "scheduler": {"type": "fifo", "max_epochs": args.epochs},
        "resources": {"cpu": args.cpus, "gpu": gpus},
        "final": {"retrain": False},
        "space": recipe_config(args.epochs, args.batch_size, args.compile),
    }
    if args.root:
        spec["data"]["root"] = str(Path(args.root).expanduser())
    return json.dumps(spec, indent=1)  # JSON is YAML


def run_alone(config: dict[str, Any], splits: Any, seed: int) -> tuple[float, float, float]:
    """(test accuracy, seconds of the train + validate loop, seconds with the test too)."""
    import torch

    from tuner.trainables import Settings, deep

    deep.ON_DEVICE.clear()  # a trial's worker copies the data to its device: so does this run
    torch._dynamo.reset()  # and compiles afresh
    settings = Settings(max_epochs=config["epochs"], seed=seed, metric="val_acc", mode="max")
    started = time.perf_counter()
    trial = deep.TrainingRun(config, splits, settings)
    while trial.epoch < trial.epochs:
        trial.train_epoch()
        trial.evaluate("val")  # its float() waits for the device
    looped = time.perf_counter() - started  # the last epoch is tested, as tuner.core.selection does
    predicted = trial.predict(splits.test_x).argmax(1).cpu()
    accuracy = float((predicted == splits.test_y).float().mean())
    return accuracy, looped, time.perf_counter() - started


def run_in_trial(text: str) -> tuple[float, float, float]:
    """(test accuracy, the trial's own seconds, the whole command's seconds)."""
    from tuner.commands import run as runner
    from tuner.search.ray_start import RayStart
    from tuner.spec.document import load_spec

    with tempfile.TemporaryDirectory() as folder:
        spec_path = Path(folder) / "bench_recipe.yaml"
        spec_path.write_text(text)
        spec = load_spec(spec_path)
        cwd = Path.cwd()
        os.chdir(folder)  # MLflow keeps artifacts in ./mlruns
        try:
            started = time.perf_counter()
            summary = runner.run_search(
                spec,
                spec_path,
                tracking_uri=f"sqlite:///{folder}/mlflow.db",
                ray_start=RayStart(None, forward_worker_output=False),
                storage=f"{folder}/tune",
            )
            command = time.perf_counter() - started
        finally:
            os.chdir(cwd)
        (result,) = Path(folder, "tune", spec.name).glob("*/result.json")
        last = json.loads(result.read_text().splitlines()[-1])
    return summary.test_metrics["test_acc"], last["time_total_s"], command


def mean_std(values: list[float], digits: int) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", help="data.root (default: the dataset's own place)")
    parser.add_argument("--max-train", type=int, default=10_000, help="0: all")
    # On CPU the test split dominates a short run: 10,000 images, 6 views each (TTA).
    parser.add_argument("--max-test", type=int, default=0, help="0: all")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--cpus", type=int, default=min(os.cpu_count() or 1, 8))
    parser.add_argument("--compile", action="store_true", help="compile: true (GPU only)")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch starts: no GPU for anyone

    import ray
    import torch

    from tuner.search import inputs
    from tuner.spec.document import SpecError, validate

    gpus = int(args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()))
    torch.set_num_threads(args.cpus)  # what the trial gets from Ray
    text = spec_text(args, 0, gpus)
    try:
        splits = inputs.load_data(validate(json.loads(text), "bench spec"))
    except SpecError as error:
        raise SystemExit(str(error)) from None
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)

    alone, trial = [], []
    for seed in range(args.seeds):
        config = recipe_config(args.epochs, args.batch_size, args.compile)
        alone.append(run_alone(config, splits, seed))
        trial.append(run_in_trial(spec_text(args, seed, gpus)))
        print(f"seed {seed}: test_acc alone {alone[-1][0]:.4f}, trial {trial[-1][0]:.4f}")
    ray.shutdown()

    sizes = f"{len(splits.train_y)} train / {len(splits.val_y)} val / {len(splits.test_y)} test"
    print(f"\n{args.dataset}: {sizes}; {'cuda' if gpus else 'cpu'}, {args.cpus} CPUs; ", end="")
    print(f"{args.epochs} epochs of {args.batch_size}; {args.seeds} seeds")
    acc, loop, total = (list(column) for column in zip(*alone, strict=True))
    t_acc, own, command = (list(column) for column in zip(*trial, strict=True))
    print(f"alone: test_acc {mean_std(acc, 4)}; loop {mean_std(loop, 2)} s, ", end="")
    print(f"all {mean_std(total, 2)} s")
    print(f"trial: test_acc {mean_std(t_acc, 4)}; own {mean_std(own, 2)} s, ", end="")
    print(f"command {mean_std(command, 2)} s")
    print(f"ratio trial's own / alone's loop: {statistics.mean(own) / statistics.mean(loop):.2f}x")
    print(f"ratio command / alone's all: {statistics.mean(command) / statistics.mean(total):.2f}x")


if __name__ == "__main__":
    main()
