"""What the writer sends to MLflow: a write to one run (``Write``), a trial's run named by its
trial (``TrialRun``), and queued writes merged per run (``merged``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import Metric, Param, RunTag


@dataclass(frozen=True)
class TrialRun:
    """A trial's child run, named by its Tune trial id: the writer finds it under the parent (by
    its tuner.trial_id tag) or creates it, so a trial retried or resumed, or its writes sent
    again from the journal, never opens a second run; and Tune's loop never waits for an id."""

    experiment_id: str
    parent_id: str
    trial_id: str


@dataclass
class Write:
    """One queued write to a run: a batch and text files, then (if ``status``) a change of the
    run's status. Sending it twice changes nothing: each metric keeps its timestamp (MLflow keeps
    one of each key, step, timestamp and value), params their values, tags and texts are set
    again."""

    run: str | TrialRun  # a run's id
    metrics: list[Metric] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)
    tags: list[RunTag] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # artifact path -> its text
    status: str | None = None  # RUNNING: update_run; FINISHED / FAILED / KILLED: set_terminated
    start_time: int | None = None  # ms: a trial's start, should the writer create its run
    end_time: int | None = None  # ms: when it got ``status`` (a write can be sent much later)

    def absorb(self, later: Write) -> None:
        """Take a later write to the same run into this one (their order is kept)."""
        self.metrics += later.metrics
        self.params += later.params
        self.tags += later.tags
        self.texts |= later.texts
        if later.status:  # RUNNING, then FINISHED: the run ends FINISHED
            self.status, self.end_time = later.status, later.end_time
        self.start_time = self.start_time or later.start_time

    def as_json(self) -> dict[str, Any]:
        """What the journal keeps of it (``of_json`` reads it back)."""
        return {
            "run": self.run if isinstance(self.run, str) else self.run.__dict__,
            "metrics": [[m.key, m.value, m.timestamp, m.step] for m in self.metrics],
            "params": [[p.key, p.value] for p in self.params],
            "tags": [[t.key, t.value] for t in self.tags],
            "texts": self.texts,
            "status": self.status,
            "start_time": self.start_time,
            "end_time": self.end_time,
        }

    @classmethod
    def of_json(cls, kept: dict[str, Any]) -> Write:
        run = kept["run"]
        return cls(
            run=run if isinstance(run, str) else TrialRun(**run),
            metrics=[Metric(*values) for values in kept["metrics"]],
            params=[Param(*values) for values in kept["params"]],
            tags=[RunTag(*values) for values in kept["tags"]],
            texts=kept["texts"],
            status=kept["status"],
            start_time=kept["start_time"],
            end_time=kept["end_time"],
        )


def merged(writes: Iterable[Write]) -> list[Write]:
    """Each run's consecutive writes as one, up to and including its end (a status other than
    RUNNING): a trial's start, epochs and end queued together are one create_run, one log_batch
    and one set_terminated."""
    out: list[Write] = []
    last: dict[str | TrialRun, Write] = {}  # run -> its latest write in ``out``
    for write in writes:
        previous = last.get(write.run)
        if previous is not None and previous.status in (None, "RUNNING"):
            previous.absorb(write)
        else:
            out.append(write)
            last[write.run] = write
    return out
