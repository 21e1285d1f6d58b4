"""Which searcher finds the best config for the same epoch budget: tuner's default (Optuna's GP
under ASHA, for searches of up to 250 trials) against the strongest alternatives Ray Tune can run.

Every searcher runs through tuner itself (``tuner run``'s ``run_search``, each search in its own
MLflow store, Ray started once for the whole bench): random search under ASHA and under FIFO,
Tune's BOHB (TuneBOHB with its HyperBandForBOHB scheduler, ``search.algorithm: bohb``),
Optuna's TPE and CMA-ES samplers under ASHA (``search.sampler: tpe | cmaes``), and OptunaHub's
AutoSampler under ASHA. OptunaHub fetches AutoSampler from GitHub at run time; offline, give
``--optunahub-registry``, a local copy of the registry (github.com/optuna/optunahub-registry's
``package`` folder), else it is listed as unavailable. It is not a ``search.sampler`` choice:
the bench has tuner's search use it in place of its own sampler.
Two tasks:

- ``mfh``: mf-prior-bench's MF-Hartmann 6 (``bench/mf_hartmann.py``: a benchmark nobody here
  wrote; fidelity = epochs, the last epoch the true function), minimised; regret against its
  known optimum. 10 seeds; 16 random + FIFO trials of 9 epochs: a budget of 144 epochs.
- ``fashion``: ``bench_search.py``'s Fashion-MNIST subset (about 4 minutes a search on 2
  cores); regret against the best any searcher found. 5 seeds.

Every searcher gets the same epoch budget: random + FIFO's trials times ``max_epochs``. The
others are given more trials than that budget can train (ASHA and HyperBand stop most early),
and each search is stopped once its trials have trained the budget (a Tune stopper the bench
adds: tuner has no budget in epochs); every anytime curve (the best value so far against
epochs trained, ``tuner/publishing/anytime.py``) is cut there. It saves the median regret
curves as a PNG and prints one line per searcher: the epochs it needed to reach random + FIFO's
final best, as a share of the budget (median over seeds, and the range; inf: never), and its
final regret (median, range).

It needs mf-prior-bench, installed without its dependencies: it pins numpy<2, yet its synthetic
functions run on tuner's NumPy 2 (of the rest, it needs more-itertools and ConfigSpace; pandas
and pyarrow are there); BOHB needs hpbandster and ConfigSpace, CMA-ES cmaes, and the
AutoSampler optunahub:

    .venv/bin/pip install --no-deps mf-prior-bench==1.10.0 && .venv/bin/pip install \
        more-itertools hpbandster==0.7.4 configspace==1.2.2 cmaes==0.13.1 optunahub==0.5.0
    .venv/bin/python bench/bench_searchers.py                  # mfh, 10 seeds
    .venv/bin/python bench/bench_searchers.py --task fashion --seeds 1
    .venv/bin/python bench/bench_searchers.py --task fashion --searchers tpe,random-fifo,bohb
    .venv/bin/python bench/bench_searchers.py --searchers auto,gp \
        --optunahub-registry optunahub-registry/package
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mf_hartmann
import ray
import yaml
from bench_search import SPACE as FASHION_SPACE
from bench_search import best_at, run_spec
from ray import tune

from tuner.core.objective import Mode, Objective
from tuner.publishing.anytime import Point, epochs_to_reach
from tuner.search import searchers
from tuner.spec.document import load_spec, read_yaml

BENCH = Path(__file__).resolve().parent
# key -> (label, `--set` overrides); the default first, the baseline second.
SEARCHERS = {
    "gp": ("optuna gp + asha (default)", ("search.sampler=gp",)),
    "random-fifo": ("random + fifo", ("search.algorithm=random", "scheduler.type=fifo")),
    "random-asha": ("random + asha", ("search.algorithm=random",)),
    "bohb": ("bohb (its hyperband)", ("search.algorithm=bohb",)),
    "tpe": ("optuna tpe + asha", ("search.sampler=tpe",)),
    "cmaes": ("optuna cma-es + asha", ("search.sampler=cmaes",)),
    "auto": ("optunahub autosampler + asha", ()),  # its sampler: sampled_by
}
DEFAULT, BASELINE = "gp", "random-fifo"
# Trials per FIFO trial for the searchers that stop trials early: enough for BOHB (HyperBand's
# widest bracket trains most trials for 1 epoch) to train the budget; EpochBudget stops the
# searches when the budget is trained, so trials never started cost nothing.
EARLY_STOP_TRIALS = 16

MFH_SPEC = f"""\
name: bench_searchers_mfh
trainable: "mf_hartmann:fit"
data: {{dataset: digits}}  # unused by the function; tuner tests its `test` network on it
metric: val_loss
search: {{num_samples: 16, max_concurrent: 2}}
scheduler: {{max_epochs: 9}}
final: {{repeats: 1}}
resources: {{cpu: 1}}
space:
  function: {mf_hartmann.FUNCTION}
""" + "".join(f"  X_{i}: {{uniform: [0.0, 1.0]}}\n" for i in range(mf_hartmann.dimensions()))


@dataclass(frozen=True)
class Task:
    title: str
    spec: str  # the spec's YAML; its search.num_samples: random + FIFO's trials by default
    seeds: int
    optimum: float | None  # the known best value; None: the best any searcher found


TASKS = {
    "mfh": Task(
        f"MF-Hartmann ({mf_hartmann.FUNCTION}, mf-prior-bench)",
        MFH_SPEC,
        10,
        mf_hartmann.optimum(mf_hartmann.FUNCTION),
    ),
    "fashion": Task("a Fashion-MNIST subset (bench_search.py)", FASHION_SPACE, 5, None),
}


AUTO_SAMPLER = "samplers/auto_sampler"  # its package in OptunaHub's registry


@functools.cache  # loaded once: checked by ``unavailable``, then used by every search
def auto_sampler(registry: Path | None) -> type:
    """OptunaHub's AutoSampler class: from ``registry`` (a local copy of OptunaHub's registry's
    ``package`` folder), else fetched from GitHub (a git or network error offline)."""
    import optunahub

    if registry is not None:
        return optunahub.load_local_module(AUTO_SAMPLER, registry_root=str(registry)).AutoSampler
    return optunahub.load_module(AUTO_SAMPLER).AutoSampler


def unavailable(key: str, registry: Path | None) -> str | None:
    """Why searcher ``key`` cannot run here; None when it can."""
    if key != "auto":
        return None
    try:
        auto_sampler(registry)
    except Exception as error:  # git's or the network's error, or no package in ``registry``
        reason = str(error).strip().splitlines()[-1].strip()
        return f"unavailable ({reason}): give --optunahub-registry, a local copy of its registry"
    return None


@contextlib.contextmanager
def sampled_by(key: str, registry: Path | None) -> Iterator[None]:
    """For ``auto``, tuner's search samples with AutoSampler (seeded with ``search.seed``) in
    place of its own Optuna sampler: a bench-only patch, as ``stopped_at`` below."""
    if key != "auto":
        yield
        return
    sampler = auto_sampler(registry)
    original = searchers.optuna_sampler
    searchers.optuna_sampler = lambda search: sampler(seed=search.seed)
    try:
        yield
    finally:
        searchers.optuna_sampler = original


class EpochBudget(tune.Stopper):
    """Stops the whole search at the first epoch past ``budget`` in all (the result that stops
    a search is not recorded: the one past the budget, which no curve reads). Epochs are each
    trial's ``training_iteration``: a trial's closing result repeats its last."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.epochs: dict[str, int] = {}  # trial -> epochs trained

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.epochs[trial_id] = result["training_iteration"]
        return False

    def stop_all(self) -> bool:
        return sum(self.epochs.values()) > self.budget


@contextlib.contextmanager
def stopped_at(budget: int) -> Iterator[None]:
    """``tune.RunConfig`` as tuner's run makes it, with an EpochBudget: a bench-only patch,
    as bench_many_trials.py patches Tune to time it."""
    original = tune.RunConfig

    class WithBudget(original):  # a subclass: Tune checks the type of the config it gets
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, stop=EpochBudget(budget), **kwargs)

    tune.RunConfig = WithBudget  # type: ignore[misc]
    try:
        yield
    finally:
        tune.RunConfig = original  # type: ignore[misc]


def run_search(
    root: Path,
    task: Task,
    key: str,
    seed: int,
    trials: int,
    budget: int,
    verbose: bool,
    registry: Path | None,
) -> Run:
    """One search of ``task`` by searcher ``key`` in its own folder and store; its curve."""
    raw = read_yaml(task.spec, "bench_searchers.py")
    samples = trials if key == BASELINE else trials * EARLY_STOP_TRIALS
    overrides = [*SEARCHERS[key][1], f"search.num_samples={samples}", f"search.seed={seed}"]
    overrides.append("final.repeats=1")  # no repeats of tied configs: the curve is the search
    folder = root / f"{key}_seed{seed}"
    folder.mkdir()
    spec_path = folder / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_path, overrides, code_path=(str(BENCH),))
    started = time.perf_counter()
    output = folder / "output.txt"
    with contextlib.ExitStack() as stack:
        if not verbose:  # tuner's own lines for each search, kept in its folder
            stream = stack.enter_context(output.open("w"))
            stack.enter_context(contextlib.redirect_stdout(stream))
            stack.enter_context(contextlib.redirect_stderr(stream))
        stack.enter_context(stopped_at(budget))
        stack.enter_context(sampled_by(key, registry))
        curve = run_spec(folder, spec, spec_path)
    return Run(curve, time.perf_counter() - started)


@dataclass(frozen=True)
class Run:
    curve: list[Point]
    seconds: float  # the whole search, its closing phase included


def regret(value: float, reference: float, mode: Mode) -> float:
    """How far ``value`` is from ``reference`` (the best known), in the metric's units."""
    return abs(reference - value) if Objective("", mode).better(reference, value) else 0.0


def plot(task: Task, curves: dict[str, list[list[Point]]], budget: int, best: float, mode: Mode,
         out: Path) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    xs = list(range(1, budget + 1))
    for key, runs in curves.items():
        medians = [
            statistics.median(regret(best_at(run, x, "epochs"), best, mode) for run in runs)
            for x in xs
        ]
        ax.plot(xs, medians, label=SEARCHERS[key][0], lw=2.5 if key == DEFAULT else 1.5)
    ax.set_yscale("log")
    ax.set_xlabel("epochs trained (all trials)")
    reference = "its known optimum" if task.optimum is not None else "the best any searcher found"
    ax.set_ylabel(f"regret: best so far against {reference} (median)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    seeds = len(next(iter(curves.values())))
    ax.set_title(f"Anytime curves on {task.title}, {seeds} seeds")
    figure.savefig(out, dpi=110)


def summary(
    curves: dict[str, list[list[Point]]], budget: int, best: float, mode: Mode
) -> list[str]:
    """One line per searcher: epochs to reach the baseline's final best, and final regret."""
    targets = [best_at(run, budget, "epochs") for run in curves[BASELINE]]
    lines, regrets = [], {}
    for key, runs in curves.items():
        shares = []
        for run, target in zip(runs, targets, strict=True):
            reached = epochs_to_reach([p for p in run if p.epochs <= budget], target, mode)
            shares.append(reached / budget if reached else math.inf)  # inf: never within it
        finals = [regret(best_at(run, budget, "epochs"), best, mode) for run in runs]
        regrets[key] = statistics.median(finals)
        lines.append(
            f"{SEARCHERS[key][0]:30} reached {SEARCHERS[BASELINE][0]}'s final best with "
            f"{statistics.median(shares):.2f}x the budget (median; {min(shares):.2f}.."
            f"{max(shares):.2f}); final regret {regrets[key]:.4g} (median; "
            f"{min(finals):.4g}..{max(finals):.4g})"
        )
    winner = min(regrets, key=regrets.__getitem__)
    if DEFAULT in regrets:
        lines.append(
            f"lowest median final regret: {SEARCHERS[winner][0]} ({regrets[winner]:.4g}); "
            f"the default's {regrets[DEFAULT]:.4g}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS, default="mfh")
    parser.add_argument("--seeds", type=int, help="default: 10 for mfh, 5 for fashion")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds count up from it")
    parser.add_argument(
        "--searchers",
        default=",".join(SEARCHERS),
        help=f"comma-separated, of {', '.join(SEARCHERS)} (the baseline, {BASELINE}, always)",
    )
    parser.add_argument("--trials", type=int, help="random + FIFO's trials (the spec's: 16, 20)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the PNG")
    parser.add_argument("--verbose", action="store_true", help="tuner's lines for each search")
    parser.add_argument(
        "--optunahub-registry",
        type=Path,
        help="a local copy of OptunaHub's registry's package folder, for AutoSampler (offline)",
    )
    args = parser.parse_args()
    task = TASKS[args.task]
    keys = [key for key in SEARCHERS if key in {*args.searchers.split(","), BASELINE}]
    unknown = set(args.searchers.split(",")) - set(SEARCHERS)
    if unknown:
        parser.error(f"unknown searchers {sorted(unknown)}; known: {', '.join(SEARCHERS)}")
    for key in list(keys):
        reason = unavailable(key, args.optunahub_registry)
        if reason:
            print(f"{SEARCHERS[key][0]}: {reason}")
            keys.remove(key)
    raw = read_yaml(task.spec, "bench_searchers.py")
    trials = args.trials or raw["search"]["num_samples"]
    budget = trials * raw["scheduler"]["max_epochs"]
    mode: Mode = "min" if raw["metric"].endswith("_loss") else "max"
    seeds = range(args.first_seed, args.first_seed + (args.seeds or task.seeds))
    print(f"{task.title}: {budget} epochs each ({trials} random + FIFO trials; "
          f"{trials * EARLY_STOP_TRIALS} for the others, cut at {budget} epochs)")  # fmt: skip
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    curves: dict[str, list[list[Point]]] = {key: [] for key in keys}
    # One folder for the whole bench, and the first search's cwd: Ray starts its workers in
    # the directory the driver had when Ray started, so it must outlive every search.
    root = Path(tempfile.mkdtemp(prefix="bench_searchers_"))
    started = time.perf_counter()
    for seed in seeds:
        for key in keys:
            run = run_search(
                root, task, key, seed, trials, budget, args.verbose, args.optunahub_registry
            )
            curves[key].append(run.curve)
            trained = run.curve[-1].epochs
            short = f", SHORT of the {budget}-epoch budget" if trained < budget else ""
            print(
                f"seed {seed} {SEARCHERS[key][0]}: best {best_at(run.curve, budget, 'epochs'):.4f}"
                f" within {budget} epochs (trained {trained}{short}; {run.seconds:.0f} s)",
                flush=True,
            )
        # After each seed, the answer so far: a long run cut short still says something.
        wall = time.perf_counter() - started
        report(args, task, curves, budget, mode, wall)
    ray.shutdown()
    shutil.rmtree(root)


def report(
    args: argparse.Namespace,
    task: Task,
    curves: dict[str, list[list[Point]]],
    budget: int,
    mode: Mode,
    wall: float,
) -> None:
    """The PNG and the summary lines, over the seeds run so far."""
    finals = [best_at(run, budget, "epochs") for runs in curves.values() for run in runs]
    best = task.optimum if task.optimum is not None else Objective("", mode).best(finals)
    out = args.out.absolute() / f"bench_searchers_{args.task}.png"
    plot(task, curves, budget, best, mode, out)
    searches = sum(len(runs) for runs in curves.values())
    print(f"after {len(curves[BASELINE])} seeds, {searches} searches in {wall:.0f} s "
          f"(load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}); "
          f"anytime curves: {out}")  # fmt: skip
    reference = "known optimum" if task.optimum is not None else "best any searcher found"
    print(f"regret against the {reference}, {best:.4f}:")
    for line in summary(curves, budget, best, mode):
        print(line, flush=True)


if __name__ == "__main__":
    main()
