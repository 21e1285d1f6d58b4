"""What each extra trial costs tuner, against plain Ray Tune doing the same work.

Runs N trials of ``fixed_cost.py`` (each epoch waits ``--cost-s`` seconds, reports and saves a
small checkpoint) through tuner (``trainable: "fixed_cost:fit"``: your own training function,
random search, FIFO) and through plain ``ray.tune.Tuner`` (the same function body, Tune's own
random search, FIFO), one epoch a trial, two trials at a time, for each N given; each run in a
fresh process with its own Ray (so each starts alike and the driver's peak memory is its own).
It prints both walls, the slope of wall time against N between the smallest and the largest N
(fixed start-up and closing costs cancel) and their ratio, the fixed costs, both drivers' CPU
per trial, tuner's driver time per trial by part (MLflow writes queued in Tune's loop, the
searcher, checkpoint bookkeeping, the terminal) and its MLflow writer processes' CPU, the
driver's peak memory, and the sizes of the MLflow store and Tune's folder. With ``--readers``
it then times `tuner best`, `tuner report` and `tuner ui` (its runs page, rendered by headless
Chromium) on the largest tuner search. Tune's own loop, plain or not, runs 1,000 of these
trials in about 30 s or in about 60 s, by the mode it falls into at the start (each run's line
says which: ``count_actor_requests``). ``--repeats R`` runs everything R times, each repeat's
two kinds as neighbours in time, and prints the median ratio with every repeat's, then the
slopes within each mode, from the median walls of the runs that fell in it.

    .venv/bin/python bench/bench_many_trials.py --trials 100 1000 --repeats 4 --readers
    .venv/bin/python bench/bench_many_trials.py --trials 1000 10000 --cost-s 0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CONCURRENT = 2  # trials at once: one per core of a 2-core machine
SPEC = """\
name: many
trainable: "fixed_cost:fit"
data: {{dataset: digits}}
search: {{algorithm: {algorithm}, num_samples: {trials}, max_concurrent: {concurrent}, seed: 0}}
scheduler: {{type: fifo, max_epochs: 1}}
final: {{repeats: 1}}
space:
  x: {{uniform: [0.0, 1.0]}}
  cost_s: {cost_s}
"""


# ---------------------------------------------------------------------------------------------
# One run, in its own process
# ---------------------------------------------------------------------------------------------


def run_plain(trials: int, cost_s: float, folder: Path) -> dict[str, Any]:
    import fixed_cost
    import ray
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    ray.init(include_dashboard=False, log_to_driver=False)
    tuner = tune.Tuner(
        fixed_cost.plain,
        param_space={"x": tune.uniform(0.0, 1.0), "cost_s": cost_s, "epochs": 1},
        tune_config=tune.TuneConfig(
            metric="val_acc",
            mode="max",
            num_samples=trials,
            max_concurrent_trials=CONCURRENT,
            scheduler=FIFOScheduler(),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name="plain", storage_path=str(folder), verbose=0),
    )
    started, cpu = time.perf_counter(), time.process_time()
    results = tuner.fit()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    ray.shutdown()
    return {
        "wall": wall,
        "loop": wall,
        "driver_cpu_in_loop": cpu,
        "trials": len(results),
        "errors": results.num_errors,
    }


def run_tuner(trials: int, cost_s: float, folder: Path, algorithm: str) -> dict[str, Any]:
    from bench_search_overhead import SECONDS, timed

    from tuner.core.quiet import quiet_libraries
    from tuner.search import progress, searchers, tune_state
    from tuner.search.ray_start import RayStart
    from tuner.search.recorder import TrialRecorder
    from tuner.spec.document import load_spec
    from tuner.tracking.writer import Writer

    spec_path = folder / "many.yaml"
    text = SPEC.format(algorithm=algorithm, trials=trials, concurrent=CONCURRENT, cost_s=cost_s)
    spec_path.write_text(text)
    os.chdir(folder)
    spec = load_spec(spec_path)
    quiet_libraries(verbose=False)
    ray_start = RayStart(None, forward_worker_output=False)
    for method in ("on_trial_start", "on_trial_result", "on_trial_complete"):
        timed(TrialRecorder, method, "mlflow queued")
    original_close = Writer.close

    def close(self: Writer) -> int:
        self.flush()  # all sent: then the writer process's CPU
        _writer_cpu(self)
        return original_close(self)

    Writer.close = close
    for method in ("next_trial", "on_trial_complete", "on_trial_result"):
        timed(searchers._VariantGenerator, method, "searcher")
    for method in ("suggest", "on_trial_result", "on_trial_complete"):
        timed(searchers._OptunaSearch, method, "searcher")
    timed(tune_state.StateSnapshots, "on_step_end", "checkpoints")
    timed(tune_state.CheckpointRetention, "on_checkpoint", "checkpoints")
    timed(tune_state.CheckpointRetention, "on_step_end", "checkpoints")
    timed(progress.ProgressLine, "on_step_end", "terminal")
    timed(progress.TrialLines, "on_trial_result", "terminal")
    timed(progress.TrialLines, "on_trial_complete", "terminal")
    from ray import tune

    from tuner.commands import run as runner

    timed(tune.Tuner, "fit", "loop")
    cpu = {}
    original_fit = tune.Tuner.fit

    def fit(self: Any) -> Any:
        cpu["start"] = time.process_time()
        try:
            return original_fit(self)
        finally:
            cpu["loop"] = time.process_time() - cpu["start"]

    tune.Tuner.fit = fit
    started = time.perf_counter()
    runner.run_search(
        spec,
        spec_path,
        tracking_uri=f"sqlite:///{folder}/mlflow.db",
        storage=f"{folder}/tuner_results",
        ray_start=ray_start,
    )
    wall = time.perf_counter() - started
    import ray

    ray.shutdown()
    return {
        "wall": wall,
        "loop": SECONDS["loop"],
        "driver_cpu_in_loop": cpu["loop"],
        "writer_cpu": WRITER_CPU["s"],
        "parts": {k: v for k, v in SECONDS.items() if k != "loop"},
        "mlflow_mb": _mb(folder / "mlflow.db"),
        "optuna_mb": _mb(folder / "optuna.db"),
    }


WRITER_CPU = {"s": 0.0}  # CPU seconds of the MLflow writer processes that ended


def _writer_cpu(writer: Any) -> None:
    """Add a writer process's CPU time (user and system) so far to WRITER_CPU."""
    stat = Path(f"/proc/{writer._process.pid}/stat")
    if stat.is_file():
        fields = stat.read_text().rsplit(")", 1)[1].split()
        WRITER_CPU["s"] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def count_actor_requests() -> dict[str, int]:
    """Count the trial workers (actors) Ray Tune asks Ray for, which tell the mode its loop ran
    in: CONCURRENT when it reused them, one a trial when it ran one trial at a time (why:
    docs/speed.md, "Warm workers")."""
    from ray.air.execution._internal.actor_manager import RayActorManager

    requests = {"n": 0}
    add_actor = RayActorManager.add_actor

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        requests["n"] += 1
        return add_actor(self, *args, **kwargs)

    RayActorManager.add_actor = counted
    return requests


def one(kind: str, trials: int, cost_s: float, folder: Path, algorithm: str) -> None:
    """One run; its figures as a JSON line on stdout."""
    sys.path.insert(0, str(BENCH))
    requests = count_actor_requests()
    if kind == "plain":
        figures = run_plain(trials, cost_s, folder)
    else:
        figures = run_tuner(trials, cost_s, folder, algorithm)
    storage = folder / ("plain" if kind == "plain" else "tuner_results")
    figures["actors_requested"] = requests["n"]
    figures["tune_folder_mb"] = _mb(storage)
    figures["driver_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("FIGURES " + json.dumps(figures), flush=True)


# ---------------------------------------------------------------------------------------------
# The bench: runs in subprocesses, then the comparison
# ---------------------------------------------------------------------------------------------


def measured(kind: str, trials: int, cost_s: float, folder: Path, algorithm: str) -> dict:
    command = [sys.executable, __file__, "--one", kind, "--trials", str(trials)]
    command += ["--cost-s", str(cost_s), "--folder", str(folder), "--algorithm", algorithm]
    env = {**os.environ, "PYTHONPATH": f"{BENCH}{os.pathsep}{REPO}", "RAY_AIR_NEW_OUTPUT": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("FIGURES "):
            return json.loads(line.removeprefix("FIGURES "))
    output = done.stdout[-3000:] + done.stderr[-3000:]
    raise SystemExit(f"{kind} with {trials} trials failed:\n{output}")


def readers(folder: Path) -> None:
    """`tuner best`, `tuner report` and `tuner ui`'s runs page on the search in ``folder``."""
    uri = f"sqlite:///{folder}/mlflow.db"
    for command in (["best", "many"], ["report", "many", "--out", str(folder / "many.html")]):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "tuner", *command, "--tracking-uri", uri],
            cwd=folder,
            check=True,
            capture_output=True,
        )
        print(f"tuner {command[0]}: {time.perf_counter() - started:.1f} s")
    print(f"tuner ui (its runs page, rendered by headless Chromium): {ui_seconds(folder, uri)}")


def ui_seconds(folder: Path, uri: str) -> str:
    """Seconds from asking Chromium for the page `tuner ui` prints to its DOM listing the
    trials (after the server answers)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return "skipped (no chromium: apt-get install chromium)"
    sys.path.insert(0, str(REPO))
    from tests.processes import free_port, stop_group
    from tests.tuner.test_ui_browser import CHROMIUM_FLAGS

    port = str(free_port())
    server = subprocess.Popen(
        [sys.executable, "-m", "tuner", "ui", "many", "--port", port, "--tracking-uri", uri],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        url = next(line for line in server.stdout if line.startswith("MLflow UI for "))
        url = url.split(": ", 1)[1].strip()
        started = time.perf_counter()
        dom = subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={folder / 'chromium'}",
                "--virtual-time-budget=30000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout
        seconds = time.perf_counter() - started
    finally:
        stop_group(server)
    rows = dom.count('role="row" row-index=')
    return f"{seconds:.1f} s ({rows} run rows drawn, MLflow pages them)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--cost-s", type=float, default=0.02, help="seconds an epoch waits")
    parser.add_argument("--algorithm", default="random", choices=["random", "optuna"])
    parser.add_argument("--readers", action="store_true", help="time best, report, ui too")
    parser.add_argument(
        "--repeats", type=int, default=1, help="run it all this many times: the median ratio"
    )
    parser.add_argument("--one", choices=["plain", "tuner"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.trials[0], args.cost_s, args.folder, args.algorithm)
        return
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.cost_s} s per trial, {CONCURRENT} at once; tuner's search: {args.algorithm}")
    low, high = min(args.trials), max(args.trials)
    slopes: dict[str, list[float]] = {"plain": [], "tuner": []}
    fixed: dict[str, list[float]] = {"plain": [], "tuner": []}
    runs: list[tuple[str, int, str, float]] = []  # kind, trials, Tune's mode, wall
    with tempfile.TemporaryDirectory() as temporary:
        for repeat in range(args.repeats):
            walls: dict[str, dict[int, float]] = {"plain": {}, "tuner": {}}
            for trials in args.trials:
                for kind in ("plain", "tuner"):
                    folder = Path(temporary, f"{kind}_{trials}_{repeat}")
                    folder.mkdir()
                    figures = measured(kind, trials, args.cost_s, folder, args.algorithm)
                    walls[kind][trials] = figures["wall"]
                    runs.append((kind, trials, mode(figures), figures["wall"]))
                    print(f"{kind} {trials} trials: {described(figures, trials)}", flush=True)
            if high > low:
                for kind, wall in walls.items():
                    slopes[kind].append(per_extra_trial(wall[low], wall[high], low, high))
                    fixed[kind].append(wall[low] - slopes[kind][-1] * low)
                ratio = slopes["tuner"][-1] / slopes["plain"][-1]
                print(
                    f"per extra trial ({low} to {high}): tuner {1000 * slopes['tuner'][-1]:.1f} "
                    f"ms, plain Ray Tune {1000 * slopes['plain'][-1]:.1f} ms: {ratio:.2f}x; fixed "
                    f"costs: tuner {fixed['tuner'][-1]:.1f} s, plain {fixed['plain'][-1]:.1f} s",
                    flush=True,
                )
        if args.repeats > 1 and high > low:
            # Each repeat's runs are neighbours in time: its ratio is the paired comparison.
            ratios = sorted(t / p for t, p in zip(slopes["tuner"], slopes["plain"], strict=True))
            print(
                f"over {args.repeats} repeats, median: tuner "
                f"{1000 * statistics.median(slopes['tuner']):.1f} ms, plain "
                f"{1000 * statistics.median(slopes['plain']):.1f} ms a trial; ratio "
                f"{statistics.median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})"
            )
            by_mode(runs, low, high)
        if args.readers:
            readers(Path(temporary, f"tuner_{high}_{args.repeats - 1}"))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def per_extra_trial(wall_low: float, wall_high: float, low: int, high: int) -> float:
    """Seconds each trial past ``low`` added: the slope, in which fixed costs cancel."""
    return (wall_high - wall_low) / (high - low)


def by_mode(runs: list[tuple[str, int, str, float]], low: int, high: int) -> None:
    """The slopes within each of Tune's modes: the median wall of each kind's runs in that mode
    at ``low`` and at ``high`` trials (a repeat's four runs seldom fall in one mode)."""
    for each in ("reused", "one at a time"):
        walls = {
            (kind, trials): [w for k, t, m, w in runs if (k, t, m) == (kind, trials, each)]
            for kind in ("plain", "tuner")
            for trials in (low, high)
        }
        counts = ", ".join(f"{k} {t}: {len(w)}" for (k, t), w in walls.items())
        if not all(walls.values()):
            print(f"Tune's {each} mode: not every kind and size ran in it ({counts} runs)")
            continue
        slope = {
            kind: per_extra_trial(
                statistics.median(walls[kind, low]), statistics.median(walls[kind, high]), low, high
            )
            for kind in ("plain", "tuner")
        }
        print(
            f"Tune's {each} mode ({counts} runs), per extra trial from the median walls: tuner "
            f"{1000 * slope['tuner']:.1f} ms, plain {1000 * slope['plain']:.1f} ms: "
            f"{slope['tuner'] / slope['plain']:.2f}x"
        )


def mode(figures: dict[str, Any]) -> str:
    """Which of Tune's two modes a run's loop ran in (``count_actor_requests``)."""
    return "reused" if figures["actors_requested"] <= CONCURRENT else "one at a time"


def described(figures: dict[str, Any], trials: int) -> str:
    """One run's figures on a line; the driver's times per trial, in ms."""
    line = f"wall {figures['wall']:.1f} s (Tune's loop {figures['loop']:.1f} s"
    line += f", {mode(figures)}: {figures['actors_requested']} actors asked for)"
    line += f"; driver CPU in the loop {1000 * figures['driver_cpu_in_loop'] / trials:.1f} ms"
    line += " a trial"
    if "parts" in figures:
        parts = ", ".join(f"{k} {1000 * v / trials:.1f}" for k, v in figures["parts"].items())
        line += f", of which (ms a trial) {parts}"
        line += f"; MLflow writer processes' CPU {1000 * figures['writer_cpu'] / trials:.1f} ms"
        line += f" a trial; MLflow store {figures['mlflow_mb']:.1f} MB"
        line += f", Optuna's {figures['optuna_mb']:.1f} MB"
    line += f"; Tune's folder {figures['tune_folder_mb']:.1f} MB"
    return line + f"; driver peak RSS {figures['driver_peak_mb']:.0f} MB"


if __name__ == "__main__":
    main()
