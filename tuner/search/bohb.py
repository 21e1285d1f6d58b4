"""Tune's BOHB as tuner runs it (``search.algorithm: bohb``), beside its HyperBand scheduler.

Imported only for a bohb search (``tuner.search.searchers``): ConfigSpace and hpbandster, which
it needs, take about 3 s to import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.search.bohb import TuneBOHB


class BOHBSearch(TuneBOHB):
    """Ray's TuneBOHB on a ConfigSpace, giving each trial the config ``to_config`` makes of
    BOHB's flat one, and told of the trials a resume restored.

    hpbandster's BOHB draws from NumPy's global generator: here it draws from one of its own,
    seeded with ``seed``, so a search repeats and the driver's generator is left alone."""

    def __init__(
        self,
        space: Any,
        to_config: Callable[[Mapping[str, Any]], dict[str, Any]],
        *,
        seed: int,
        **kwargs: Any,
    ) -> None:
        self._to_config = to_config
        self._generator = np.random.RandomState(seed).get_state()
        super().__init__(space=space, seed=seed, **kwargs)

    @contextlib.contextmanager
    def _own_generator(self) -> Iterator[None]:
        outside = np.random.get_state()
        np.random.set_state(self._generator)
        try:
            yield
        finally:
            self._generator = np.random.get_state()
            np.random.set_state(outside)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        with self._own_generator():
            if super().suggest(trial_id) is None:  # at its concurrency limit
                return None
        return self._to_config(self.trial_to_params[trial_id])

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        with self._own_generator():  # a result at a rung refits BOHB's model
            super().on_trial_result(trial_id, result)

    def resumed(self, trials: Sequence[Trial]) -> None:
        """Finished trials stop counting as running (its saved state may predate their end)."""
        for trial in trials:
            if trial.is_finished() and trial.trial_id in self.trial_to_params:
                self.on_trial_complete(trial.trial_id)
