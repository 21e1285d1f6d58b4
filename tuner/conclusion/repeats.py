"""The winner, repeated (``final.repeats``, `tuner repeat`): after the search, its top configs are
trained again with more seeds, as Ray tasks with a trial's resources; they are re-ranked by
their mean validation value, and the chosen one is tested once per seed.

Ray Tune's ``Repeater`` would repeat every trial inside the search, where it does not mix with
early stopping; this is a step after the search, on the configs it found."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import ray

import data
from tuner.core.terminal import say
from tuner.spec import space as space_lang
from tuner.spec.document import Spec
from tuner.tracking.experiment import Experiment
from tuner.trainables import Settings, Trainable
from tuner.trainables.metrics import Evaluation

CONFIDENCE = 0.95  # of the intervals recorded and of the reproduction check


# Metrics that are fractions of the images (trainables.metrics): their intervals stay in 0..1.
FRACTIONS = ("_acc", "_precision", "_recall", "_f1")


@dataclass(frozen=True)
class Spread:
    """One metric's values over seeds (at least two)."""

    values: tuple[float, ...]
    # What a value can be (an accuracy: 0..1): Student's t knows no bounds, and an interval
    # past them (few seeds near 100%) says values that can't happen.
    bounds: tuple[float, float] = (-math.inf, math.inf)

    @classmethod
    def of(cls, metric: str, values: Sequence[float]) -> Spread:
        """The spread of ``metric``'s values, bounded to 0..1 for a fraction (``FRACTIONS``)."""
        bounds = (0.0, 1.0) if metric.endswith(FRACTIONS) else (-math.inf, math.inf)
        return cls(tuple(values), bounds)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """The sample standard deviation (n - 1 in the denominator)."""
        return float(np.std(self.values, ddof=1))

    def _t(self) -> float:
        """Student's t quantile for the interval, n - 1 degrees of freedom."""
        from scipy import stats  # ~0.3 s to import, for two numbers at the end of a search

        return float(stats.t.ppf((1 + CONFIDENCE) / 2, len(self.values) - 1))

    def interval(self) -> tuple[float, float]:
        """The 95% confidence interval of the mean, within ``bounds``."""
        return self._around_mean(self._t() * self.std / math.sqrt(len(self.values)))

    def prediction_interval(self) -> tuple[float, float]:
        """Where one more run's value falls with 95% probability (wider than ``interval``,
        which is about the mean): what a single recorded value is checked against."""
        return self._around_mean(self._t() * self.std * math.sqrt(1 + 1 / len(self.values)))

    def _around_mean(self, half: float) -> tuple[float, float]:
        low, high = self.bounds
        return max(low, self.mean - half), min(high, self.mean + half)

    def metrics(self, name: str) -> dict[str, float]:
        """``NAME_mean``, ``NAME_std``, ``NAME_ci95_low``, ``NAME_ci95_high``: the parent's."""
        low, high = self.interval()
        return {
            f"{name}_mean": self.mean,
            f"{name}_std": self.std,
            f"{name}_ci95_low": low,
            f"{name}_ci95_high": high,
        }

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f} ({len(self.values)} seeds)"


@dataclass(frozen=True)
class Repeat:
    """One config trained with one seed: a child run tagged ``tuner.final=repeat``."""

    trial_id: str  # the search's trial whose config it repeats
    config: dict[str, Any]
    seed: int
    value: float  # its best value of the search metric on the validation split
    evaluation: Evaluation | None = None  # the chosen config's, on the test split


@dataclass(frozen=True)
class Repeats:
    """Every repeat of the top configs; the chosen config's are the tested ones."""

    metric: str
    runs: tuple[Repeat, ...]

    @property
    def chosen(self) -> tuple[Repeat, ...]:
        return tuple(run for run in self.runs if run.evaluation is not None)

    @property
    def trial_id(self) -> str:
        return self.chosen[0].trial_id

    @property
    def evaluations(self) -> list[Evaluation]:
        """The chosen config's tests, one per seed; the first (the search's own seed) is the
        one whose model is registered."""
        return [run.evaluation for run in self.runs if run.evaluation is not None]

    @property
    def val(self) -> Spread:
        return Spread.of(self.metric, [run.value for run in self.chosen])

    @property
    def test(self) -> Spread:
        return Spread.of(
            "test_acc", [evaluation.metrics["test_acc"] for evaluation in self.evaluations]
        )

    @property
    def metrics(self) -> dict[str, float]:
        """What the parent run records about the chosen config's seeds."""
        return {**self.val.metrics(self.metric), **self.test.metrics("test_acc")}

    def table(self) -> str:
        """Each config's mean validation value over its seeds, best first; * = chosen."""
        seeds = len(self.chosen)
        lines = [f"Top {len(self.runs) // seeds} configs, {seeds} seeds each; * = chosen:"]
        for trial_id in dict.fromkeys(run.trial_id for run in self.runs):
            spread = Spread.of(self.metric, [r.value for r in self.runs if r.trial_id == trial_id])
            mark = " *" if trial_id == self.trial_id else ""
            lines.append(f"  {trial_id:<12}{self.metric} {spread}{mark}")
        return "\n".join(lines)


def top_configs(
    ranked: Sequence[tuple[str, dict[str, Any]]], k: int
) -> list[tuple[str, dict[str, Any]]]:
    """The first ``k`` distinct configs of ``(trial id, config)`` ranked best first, each with
    its first trial (a repeated grid, or a sampler, can run one config twice)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for trial_id, config in ranked:
        found.setdefault(json.dumps(config, sort_keys=True, default=str), (trial_id, config))
    return list(found.values())[:k]


def repeat(
    trainable: Trainable,
    candidates: Sequence[tuple[str, dict[str, Any]]],
    splits: data.Splits,
    settings: Settings,
    spec: Spec,
    seeds: int,
) -> Repeats:
    """Train every candidate ``(trial id, config)`` with ``seeds`` seeds (the search's seed and
    the next ones) at once, as far as the cluster's resources allow; choose the best mean
    validation value (ties: the search's order) and test the chosen config once per seed:
    its models as trained, or retrained on train+val with ``final.retrain``."""
    if len(candidates) == 1:
        say(f"Training the best config again with {seeds} seeds, testing each.")
    else:
        say(
            f"Training the top {len(candidates)} configs again with {seeds} seeds each "
            f"({len(candidates) * seeds} runs), then testing the best on average."
        )
    options = {
        "num_cpus": spec.resources.cpu,
        "num_gpus": spec.resources.gpu,
        "max_retries": spec.max_failures,
    }
    shared = ray.put(splits)  # once, not once per task
    seeded = [replace(settings, seed=settings.seed + offset) for offset in range(seeds)]
    validate = ray.remote(trainable.validate).options(**options)
    refs = {
        (trial_id, each.seed): validate.remote(config, splits=shared, settings=each)
        for trial_id, config in candidates
        for each in seeded
    }
    validated = dict(zip(refs, ray.get(list(refs.values())), strict=True))

    def mean_value(candidate: tuple[str, dict[str, Any]]) -> float:
        return float(np.mean([validated[candidate[0], each.seed].value for each in seeded]))

    chosen_id, chosen = spec.objective.best(candidates, key=mean_value)
    if spec.final.retrain:
        retrain = ray.remote(trainable.retrain_and_test).options(**options)
        tests = [retrain.remote(chosen, splits=shared, settings=each) for each in seeded]
    else:
        test = ray.remote(trainable.test_validated).options(**options)
        tests = [
            test.remote(chosen, validated[chosen_id, each.seed], splits=shared, settings=each)
            for each in seeded
        ]
    evaluations = dict(zip([each.seed for each in seeded], ray.get(tests), strict=True))
    chosen_first = sorted(candidates, key=lambda candidate: candidate[0] != chosen_id)
    runs = [
        Repeat(
            trial_id,
            config,
            each.seed,
            validated[trial_id, each.seed].value,
            evaluations[each.seed] if trial_id == chosen_id else None,
        )
        for trial_id, config in chosen_first
        for each in seeded
    ]
    return Repeats(settings.metric, tuple(runs))


def record(
    experiment: Experiment, repeats: Repeats, tree: space_lang.Group, *, step: int = 0
) -> None:
    """Each repeat as a child run of the parent, and the chosen config's spread on the parent
    at ``step``: the how-manyth set of repeats it is (0: the first)."""
    for run in repeats.runs:
        tested = run.evaluation.metrics if run.evaluation is not None else {}
        experiment.log_repeat(
            run.trial_id,
            run.seed,
            space_lang.trial_params(tree, run.config),
            {repeats.metric: run.value, **tested},
            chosen=run.trial_id == repeats.trial_id,
        )
    experiment.log_metrics(repeats.metrics, step=step)
