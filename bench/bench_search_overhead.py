"""Where does a search's wall time go? Its compute limit against what it took, and the rest.

Runs one real search (by default ``search_spaces/digits.yaml``, README's main job) in this
process, with a fresh MLflow store and Tune storage in a temporary folder, and prints:

- the compute limit: the trials' own seconds of training + validation (each epoch reports
  ``epoch_seconds``, measured inside the trial), summed, over the trials that run at once;
- the search's wall time (Tune's loop, ``Tuner.fit``) and its ratio to that limit;
- where the rest goes: the wait for Ray to start, the first trial result after the command
  started (and the work the machine did before it, in core-seconds: its floor on these cores),
  each trial's start latency (from the driver starting it to its first result, less
  that first epoch's compute and checkpoint), checkpointing (saved in the trials), the driver's
  time in MLflow calls and in the searcher (both inside Tune's loop), its CPU in that loop (on
  a machine with few cores, taken from the trials), and the closing phase (test evaluation,
  plots, model export) after the loop.

The driver-side times come from wrapping the recorder's and the searcher's methods here, in
the bench: tuner itself carries no timing code beyond what trials report. ``--fresh-workers``
turns Tune's ``reuse_actors`` off, to show what a new worker per trial costs.

    .venv/bin/python bench/bench_search_overhead.py
    .venv/bin/python bench/bench_search_overhead.py --fresh-workers
    .venv/bin/python bench/bench_search_overhead.py search_spaces/fashion_mnist.yaml \\
        --set data.max_train=5000 --set search.num_samples=8
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports: what a user's command pays too

import os  # noqa: E402


def busy_core_seconds() -> float:
    """CPU seconds the whole machine has spent working since boot, every process included (the
    driver, Ray's, the trials'): /proc/stat's user, nice, system, irq and softirq (Linux)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = stat.readline().split()[1:8]
    ticks = sum(int(part) for part in (user, nice, system, irq, softirq))
    return ticks / os.sysconf("SC_CLK_TCK")


BUSY_AT_START = busy_core_seconds()

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import ray  # noqa: E402

from tuner.core.quiet import quiet_libraries  # noqa: E402
from tuner.search.ray_start import RayStart  # noqa: E402
from tuner.spec.document import load_spec  # noqa: E402

SECONDS: dict[str, float] = defaultdict(float)  # driver-side time per part, summed
MOMENTS: dict[str, float] = {}  # when something first happened, seconds after STARTED
TRIAL_STARTED: dict[str, float] = {}
FIRST_RESULT: dict[str, float] = {}


def timed(owner: Any, name: str, part: str, then: Callable[..., None] | None = None) -> None:
    """Wrap ``owner.name`` so its wall time adds to ``SECONDS[part]``; ``then`` sees its args."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SECONDS[part] += time.perf_counter() - start
            if then is not None:
                then(*args, **kwargs)

    setattr(owner, name, wrapper)


def now() -> float:
    return time.perf_counter() - STARTED


def moment(name: str) -> None:
    """When ``name`` first happened, and the driver's CPU seconds by then."""
    MOMENTS.setdefault(name, now())
    MOMENTS.setdefault(f"{name}_cpu", time.process_time())


def trial_started(self: Any, iteration: int, trials: list, trial: Any, **info: Any) -> None:
    TRIAL_STARTED.setdefault(trial.trial_id, now())


def trial_result(self: Any, iteration: int, trials: list, trial: Any, **info: Any) -> None:
    FIRST_RESULT.setdefault(trial.trial_id, now())
    if "first_result" not in MOMENTS:
        MOMENTS["first_result"] = now()
        MOMENTS["busy_to_first_result"] = busy_core_seconds() - BUSY_AT_START
        MOMENTS["driver_to_first_result"] = time.process_time()


def instrument(fresh_workers: bool) -> None:
    from ray import tune
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from tuner.commands import run as runner
    from tuner.search.recorder import TrialRecorder as recorder

    timed(recorder, "on_trial_start", "mlflow", then=trial_started)
    timed(recorder, "on_trial_result", "mlflow", then=trial_result)
    timed(recorder, "on_trial_complete", "mlflow")
    timed(recorder, "on_trial_error", "mlflow")
    for method in ("suggest", "on_trial_result", "on_trial_complete"):
        timed(OptunaSearch, method, "searcher")
    timed(BasicVariantGenerator, "next_trial", "searcher")
    timed(RayStart, "wait", "ray_wait")
    timed(tune.Tuner, "fit", "search", then=lambda *a, **k: moment("fit_end"))
    timed(runner, "_new_tuner", "tuner_setup", then=lambda *a, **k: moment("fit"))
    if fresh_workers:
        original = tune.TuneConfig.__init__

        def no_reuse(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **{**kwargs, "reuse_actors": False})

        tune.TuneConfig.__init__ = no_reuse


def trial_results(storage: Path, name: str) -> dict[str, list[dict[str, Any]]]:
    """Every trial's reported results, from Tune's own result.json files."""
    results: dict[str, list[dict[str, Any]]] = {}
    for path in (storage / name).glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            results[rows[0]["trial_id"]] = rows
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="search_spaces/digits.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--fresh-workers", action="store_true", help="reuse_actors off")
    args = parser.parse_args()
    spec_path = Path(args.spec).absolute()
    spec = load_spec(spec_path, args.overrides)
    load = os.getloadavg()
    # As `tuner run` does: Ray starts while the rest is imported and the search gets ready.
    quiet_libraries(verbose=False)
    ray_start = RayStart(None, forward_worker_output=False)
    instrument(args.fresh_workers)
    from tuner.commands import run as runner

    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        summary = runner.run_search(
            spec,
            spec_path,
            tracking_uri=f"sqlite:///{folder}/mlflow.db",
            storage=f"{folder}/tuner_results",
            ray_start=ray_start,
        )
        done = now()
        results = trial_results(Path(folder) / "tuner_results", spec.name)
        cpus = ray.cluster_resources().get("CPU", 1)
    ray.shutdown()

    per_slot = max(1, int(cpus // spec.resources.cpu))
    slots = min(per_slot, spec.search.max_concurrent or per_slot)
    epochs = [row for rows in results.values() for row in rows if "epoch_seconds" in row]
    compute = sum(row["epoch_seconds"] for row in epochs)
    limit = compute / slots
    search = SECONDS["search"]
    latencies = [
        FIRST_RESULT[trial]
        - TRIAL_STARTED[trial]
        - rows[0].get("epoch_seconds", 0)
        - rows[0].get("checkpoint_seconds", 0)
        for trial, rows in results.items()
        if trial in FIRST_RESULT and trial in TRIAL_STARTED
    ]
    closing = done - MOMENTS["fit_end"]
    print(f"spec {args.spec} {' '.join(args.overrides)}".strip())
    print(f"workers: {'fresh per trial' if args.fresh_workers else 'reused (reuse_actors)'}")
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; CPUs {cpus:g}")
    print(f"trials {len(results)}, epochs {len(epochs)}, {slots} at once")
    print(f"compute: {compute:.1f} s of training + validation; limit {limit:.1f} s")
    print(f"search (Tune's loop): {search:.1f} s = {search / limit:.2f}x the compute limit")
    print(f"waiting for Ray (it starts while the driver prepares): {SECONDS['ray_wait']:.1f} s")
    print(
        f"first trial result: {MOMENTS['first_result']:.1f} s after the command started "
        f"(Tune's loop started at {MOMENTS['fit']:.1f} s)"
    )
    busy = MOMENTS["busy_to_first_result"]
    cores = os.cpu_count() or 1
    print(
        f"work before it: {busy:.1f} core-seconds, all processes (the driver, Ray's, the "
        f"trials'; the driver {MOMENTS['driver_to_first_result']:.1f}); on {cores} cores "
        f"at least {busy / cores:.1f} s even with no core idle"
    )
    print(
        f"trial start latency: median {statistics.median(latencies):.2f} s, "
        f"p90 {percentile(latencies, 0.9):.2f} s"
    )
    checkpoints = sum(row.get("checkpoint_seconds", 0) for row in epochs)
    print(f"checkpointing (in trials): {checkpoints:.1f} s")
    print(f"MLflow calls in the driver's loop: {SECONDS['mlflow']:.1f} s")
    print(f"searcher: {SECONDS['searcher']:.1f} s")
    loop_cpu = MOMENTS["fit_end_cpu"] - MOMENTS["fit_cpu"]
    print(f"the driver's CPU in Tune's loop (its bookkeeping, all its threads): {loop_cpu:.1f} s")
    print(f"closing phase (test, plots, export): {closing:.1f} s")
    print(f"whole command: {done:.1f} s; best test_acc {summary.test_metrics['test_acc']:.4f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
