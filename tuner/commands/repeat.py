"""`tuner repeat NAME`: a finished search's best config trained again with new seeds."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow.tracking import MlflowClient

from tuner.conclusion.repeats import Repeats, record, repeat
from tuner.core.code_version import code_version
from tuner.core.errors import UsageError
from tuner.core.quiet import quiet_libraries
from tuner.core.terminal import say
from tuner.search.inputs import anchored_space, load_data, trial_settings
from tuner.search.ray_start import RayStart
from tuner.spec.document import load_spec
from tuner.tracking.experiment import Experiment
from tuner.tracking.records import best_config_of, latest_parent, overrides_of, spec_of, trials_of
from tuner.tracking.tags import SearchTags, Tag, repeat_runs
from tuner.trainables import trainable_module


@dataclass(frozen=True)
class Reproduction:
    """The best config of a finished search trained again with more seeds, against the
    ``test_acc`` the search recorded."""

    repeats: Repeats
    recorded: float  # the parent run's test_acc

    @property
    def reproduced(self) -> bool:
        """Whether the recorded value is one the seeds would give: inside the 95% prediction
        interval of one more seed (a single run is not held to the mean's narrower interval)."""
        low, high = self.repeats.test.prediction_interval()
        return low <= self.recorded <= high

    def lines(self) -> list[str]:
        """What `tuner repeat` prints: the spread, then the verdict."""
        test = self.repeats.test
        low, high = test.interval()
        predicted = "{:.4f}..{:.4f}".format(*test.prediction_interval())
        verdict = "reproduced" if self.reproduced else "NOT reproduced"
        return [
            f"{self.repeats.metric} {self.repeats.val}",
            f"test_acc {test}; 95% interval of the mean {low:.4f}..{high:.4f}",
            f"recorded test_acc {self.recorded:.4f}: {verdict} (95% of single runs fall in "
            f"{predicted})",
        ]


def repeat_recorded(
    tracking_uri: str, name: str, seeds: int, *, address: str | None = None
) -> Reproduction:
    """Experiment ``name``'s latest finished search: its best config trained again with
    ``seeds`` seeds from the spec, overrides and data MLflow recorded, tested once per seed,
    and recorded on that run as ``final.repeats`` would have.

    Run again, it adds a set: new seeds, after those already repeated (training is seeded, so
    the same seeds would give the same values again and a falsely narrow interval), and its
    spread on the parent at the next step, so each set's summary stays in the metrics' history.
    Sets are not pooled: they may come from different code (the note below)."""
    quiet_libraries(verbose=False)  # Ray's and MLflow's own lines; tuner's say what happens
    client = MlflowClient(tracking_uri)
    parent = latest_parent(client, name)
    config = best_config_of(parent, tracking_uri)
    code_path = SearchTags.of(parent).code_path or None  # its own code: where it came from
    with tempfile.TemporaryDirectory() as directory:
        spec_path = spec_of(parent, tracking_uri, Path(directory))
        spec = load_spec(spec_path, overrides_of(parent), code_path=code_path)
    recorded, now = SearchTags.of(parent), code_version()
    say(f"Experiment {name!r}, run {parent.info.run_id}: its best config, {seeds} seeds.")
    if recorded.code != now:  # a difference in results may come from the code
        say(f"tuner: the search ran code {recorded.code or '?'}, this is {now or '?'}")
    splits = load_data(spec)
    if splits.sizes != recorded.images:
        raise UsageError(
            f"{name!r} ran on {recorded.images} images, the data here has {splits.sizes}: "
            "repeat it where its dataset is as it was"
        )
    RayStart(address, forward_worker_output=False).wait()
    best_trial = next((t.trial_id for t in trials_of(client, parent) if t.best), "best")
    trainable = trainable_module(spec.trainable, code_path=spec.code_path)
    settings = trial_settings(spec)
    earlier = repeat_runs(client, parent.info.experiment_id, parent.info.run_id)
    first = max([settings.seed, *(int(run.data.tags[Tag.SEED]) + 1 for run in earlier)])
    if earlier:
        say(f"tuner: seeds {first}..{first + seeds - 1}: {len(earlier)} repeats ran before")
    settings = replace(settings, seed=first)
    repeats = repeat(trainable, [(best_trial, config)], splits, settings, spec, seeds)
    experiment = Experiment(tracking_uri, spec.experiment)
    experiment.parent_id = parent.info.run_id
    sets = len(client.get_metric_history(parent.info.run_id, f"{spec.metric}_mean"))
    record(experiment, repeats, anchored_space(spec.tree), step=sets)
    experiment.flush(close=True)  # the repeats' runs are written before this command ends
    return Reproduction(repeats, parent.data.metrics["test_acc"])
