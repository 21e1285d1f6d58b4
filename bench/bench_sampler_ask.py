"""How long one ask of each Optuna sampler takes as a study grows: why tuner's default sampler
is a GP up to ``GP_MAX_TRIALS`` trials and TPE past them (tuner/spec/document.py).

Each sampler, built as tuner builds it (``optuna_sampler``, 10 random trials first), runs a study
of a 6-dimensional function (mf-prior-bench's space size for MF-Hartmann 6; values cost
nothing) to ``--trials`` trials, asking and telling one at a time as a search with one trial
at once would; it prints the mean seconds of an ask (the sampler's fit and suggestion) over
each stretch between the marks. The ask runs in Tune's event loop, between trials.

    .venv/bin/python bench/bench_sampler_ask.py
    .venv/bin/python bench/bench_sampler_ask.py --trials 1000 --samplers gp
"""

from __future__ import annotations

import argparse
import os
import time

import optuna

from tuner.search.searchers import optuna_sampler
from tuner.spec.document import GP_MAX_TRIALS, SearchSpec

DIMENSIONS = 6


def ask_seconds(sampler: str, trials: int, marks: list[int]) -> dict[int, float]:
    """Mean seconds of an ask over each stretch ending at a mark."""
    study = optuna.create_study(sampler=optuna_sampler(SearchSpec(sampler=sampler, seed=0)))
    means, spent, since = {}, 0.0, 0
    for number in range(1, trials + 1):
        started = time.perf_counter()
        trial = study.ask()
        x = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(DIMENSIONS)]
        spent += time.perf_counter() - started
        study.tell(trial, sum((v - 0.3) ** 2 for v in x))
        if number in marks:
            means[number], spent, since = spent / (number - since), 0.0, number
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2 * GP_MAX_TRIALS)
    parser.add_argument("--samplers", default="gp,tpe", help="comma-separated: gp, tpe, cmaes")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    marks = sorted({m for m in (50, 100, GP_MAX_TRIALS, args.trials) if m <= args.trials})
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for sampler in args.samplers.split(","):
        means = ask_seconds(sampler, args.trials, marks)
        stretches = ", ".join(
            f"{low + 1}-{high}: {means[high] * 1000:.0f} ms"
            for low, high in zip([0, *marks], marks, strict=False)
        )
        print(f"{sampler}: mean ask by trials {stretches}", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
