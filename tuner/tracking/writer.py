"""The background writer: MLflow writes queued, merged, and kept in the journal while a server
is down."""

from __future__ import annotations

import queue
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient

from tuner.core.errors import UsageError
from tuner.core.secrets import mask_secrets
from tuner.core.terminal import note
from tuner.tracking.journal import Journal
from tuner.tracking.store import health_url, is_server, unanswered
from tuner.tracking.tags import TRIAL_ROLE, Tag, child_runs, new_child_run
from tuner.tracking.values import log_batch

PROBE_S = 10  # while a server is down, how often the writer asks whether it answers again
# How long the writer waits, after a write arrives, for more before it sends: a short trial's
# start, epochs and end then merge into one write (3 store calls, not 5), and the writer keeps
# a steady pace instead of writing each piece as it comes while Tune's loop competes with it
# for the GIL. A UI a quarter of a second behind is not behind.
LINGER_S = 0.25


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
        if later.status:
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


_NOW = "now"  # a queued request: write what is kept now (ask a down server at once)


_STOP = "stop"  # the same, then end the thread


class Writer:
    """One thread that sends queued MLflow writes, so Tune's event loop never waits on the store
    (a sqlite commit or an HTTP round trip per epoch of every trial).

    One thread keeps each run's writes in order. What queued up while it was writing is merged
    per run (several epochs' results become one log_batch). A write the store refuses is
    reported by ``flush``. A write that fails because a tracking server does not answer (after
    MLflow's own retries, minutes by default) is kept, in memory and in the ``journal``, with
    every write after it; the server is asked every PROBE_S seconds, and when it answers they
    are sent, in order. (MLflow's own ``synchronous=False`` logging sends batches from a pool of
    threads, in no set order within a run, and can't queue ``set_terminated``.)
    """

    def __init__(self, tracking_uri: str, journal: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.journal = Journal(journal) if journal else None
        # What an earlier driver kept and never wrote: sent first, once the server answers.
        self._kept = [Write.of_json(w) for w in self.journal.unwritten] if self.journal else []
        self.recovered = len(self._kept)
        self._down = bool(self._kept)  # ask the server before sending what is kept
        self._next_probe = 0.0  # time.monotonic() of the next question to a down server
        # The journal's number of the latest write taken from the queue (or read from it).
        self._last = self.journal.seq if self.journal else 0
        self._runs: dict[TrialRun, str] = {}  # trial runs found or created: their run ids
        self._listed: set[str] = set()  # parents whose trial runs are all in _runs
        self._errors: list[str] = []
        self._queue: queue.Queue[tuple[int, Write] | str] = queue.Queue()
        self._lock = threading.Lock()  # the journal's file and the queue, as one
        # A daemon: a driver that dies must not hang on it; flush() is what waits for writes.
        self._thread = threading.Thread(target=self._loop, name="tuner-mlflow", daemon=True)
        self._thread.start()

    def put(self, write: Write) -> None:
        with self._lock:
            seq = self.journal.append(write.as_json()) if self.journal else 0
            self._queue.put((seq, write))

    def flush(self) -> int:
        """Wait until every queued write is written, or kept while the server does not answer
        (asked once more now); warn about those the store refused. How many are kept."""
        self._queue.put(_NOW)
        self._queue.join()
        return self._report()

    def close(self) -> int:
        """``flush``, and end the thread."""
        self._queue.put(_STOP)
        self._thread.join()
        return self._report()

    def _report(self) -> int:
        errors, self._errors = self._errors, []
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            warnings.warn(
                f"tuner: {len(errors)} MLflow write(s) failed: {errors[0]}{more}", stacklevel=3
            )
        return len(self._kept)

    def _loop(self) -> None:
        while True:
            items = self._take()
            for item in items:
                if isinstance(item, tuple):
                    self._last, write = item
                    self._kept.append(write)
            self._write_kept(now=any(isinstance(item, str) for item in items))
            for _ in items:
                self._queue.task_done()
            if _STOP in items:
                return

    def _take(self) -> list[tuple[int, Write] | str]:
        """What is queued: waits for something, or while the server is down, until it is time
        to ask it again (nothing, then); then for what follows within LINGER_S, unless asked
        to write now."""
        timeout = max(0.0, self._next_probe - time.monotonic()) if self._down else None
        try:
            items = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        until = time.monotonic() + LINGER_S
        while not isinstance(items[-1], str) and (left := until - time.monotonic()) > 0:
            try:
                items.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        while not self._queue.empty():  # only this thread takes from the queue
            items.append(self._queue.get())
        return items

    def _write_kept(self, *, now: bool) -> None:
        """Send what is kept, in order, unless the server is down (asked when it is time, or
        ``now``); what the store refuses is reported by flush(); what does not get there is
        kept, with the rest, and the server is asked again in PROBE_S seconds."""
        if not self._kept:
            return
        if self._down:
            if not now and time.monotonic() < self._next_probe:
                return
            self._next_probe = time.monotonic() + PROBE_S
            if is_server(self.tracking_uri):  # a database or a folder: kept by a killed driver
                if unanswered(health_url(self.tracking_uri)):
                    return
                self._say(f"answers: writing the {len(self._kept)} writes kept")
            self._down = False
        writes = merged(self._kept)
        for i, write in enumerate(writes):
            try:
                self._send(write)
            except Exception as error:
                if not self._undelivered(error):
                    self._errors.append(f"run {write.run}: {type(error).__name__}: {error}")
                    continue
                self._kept, self._down = writes[i:], True
                self._next_probe = time.monotonic() + PROBE_S
                where = self.journal.path if self.journal else "memory (no journal)"
                self._say(f"does not answer: its writes are kept in {where}")
                return
        self._kept = []
        if self.journal:
            with self._lock:  # no put() in between, which would make a later write the latest
                self.journal.written(self._last)

    def _undelivered(self, error: Exception) -> bool:
        """Whether a write failed on its way to a tracking server (it did not answer, after
        MLflow's own retries): kept; rather than refused by the store with a reason, which a
        server sends as a RestException: reported and dropped."""
        return is_server(self.tracking_uri) and not isinstance(error, RestException)

    def _say(self, what: str) -> None:
        server = f"the MLflow server at {mask_secrets(self.tracking_uri)}"
        note(f"tuner: {server} {what}")

    def _send(self, write: Write) -> None:
        tags = {tag.key: tag for tag in write.tags}  # the last value of each key
        run_id = self._existing_run(write.run)
        created = run_id is None
        if created:  # a new run takes the tags at creation: one store call fewer
            run_id = self._new_run(write, {key: tag.value for key, tag in tags.items()})
            tags = {}
        log_batch(
            self.client, run_id, metrics=write.metrics, params=write.params, tags=[*tags.values()]
        )
        for path, text in write.texts.items():
            self.client.log_text(run_id, text, path)
        if write.status == "RUNNING":
            if not created:  # a run created now is RUNNING already
                self.client.update_run(run_id, write.status)
        elif write.status:
            self.client.set_terminated(run_id, write.status, end_time=write.end_time)

    def _existing_run(self, run: str | TrialRun) -> str | None:
        """The id of ``run`` when it exists: a run's id, or a trial run this writer or an
        earlier driver made."""
        if isinstance(run, str):
            return run
        if run.parent_id not in self._listed:
            self._list_runs(run)
        return self._runs.get(run)

    def _new_run(self, write: Write, tags: dict[str, str]) -> str:
        """Create the trial run ``write`` goes to, with ``tags`` (only this thread makes runs)."""
        run = write.run
        assert isinstance(run, TrialRun)
        self._runs[run] = new_child_run(
            self.client,
            run.experiment_id,
            run.parent_id,
            f"trial_{run.trial_id}",
            {**tags, Tag.ROLE: TRIAL_ROLE, Tag.TRIAL_ID: run.trial_id},
            start_time=write.start_time,
        )
        return self._runs[run]

    def _list_runs(self, run: TrialRun) -> None:
        """The trial runs an earlier driver made under ``run``'s parent, found in one query:
        asking the store for each trial's run would cost a search of all the parent's runs per
        trial, which grows with the trials (25 ms each at 1,000 in a sqlite store)."""
        for found in child_runs(self.client, run.experiment_id, run.parent_id):
            trial_id = found.data.tags.get(Tag.TRIAL_ID)
            if trial_id:
                key = TrialRun(run.experiment_id, run.parent_id, trial_id)
                self._runs.setdefault(key, found.info.run_id)
        self._listed.add(run.parent_id)


def merged(writes: Iterable[Write]) -> list[Write]:
    """Each run's consecutive writes as one, up to and including the run's end (a write after
    it, such as a resumed trial's RUNNING, starts another)."""
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


# Writers by tracking URI and journal. The recorder (which Tune pickles, and unpickles on a
# resume) and the Experiment find the same writer here; both run in the driver's main thread.
_writers: dict[tuple[str, Path | None], Writer] = {}


def writer(tracking_uri: str, journal: Path | None = None) -> Writer:
    """This process's background writer to ``tracking_uri``, keeping what the store does not
    take in ``journal``, started on first use."""
    key = (tracking_uri, journal)
    if key not in _writers:
        _writers[key] = Writer(tracking_uri, journal)
    return _writers[key]


def flush_writes(tracking_uri: str, journal: Path | None = None, *, close: bool = False) -> int:
    """Wait for the queued writes to ``tracking_uri`` (warning of refused ones); ``close`` also
    stops the writer's thread (the end of an experiment: a later write starts a new one, which
    reads what is kept from the journal). How many writes are kept, unwritten."""
    key = (tracking_uri, journal)
    found = _writers.pop(key, None) if close else _writers.get(key)
    if found is None:
        return 0
    return found.close() if close else found.flush()


def write_journal(tracking_uri: str, journal: Path) -> int:
    """Write to the store, in order, what a search kept in ``journal``; how many writes. A
    UsageError when some remain unwritten (the server stopped answering)."""
    recovered = writer(tracking_uri, journal).recovered
    kept = flush_writes(tracking_uri, journal, close=True)
    if kept:
        raise UsageError(
            f"the MLflow server at {mask_secrets(tracking_uri)} stopped answering: {kept} "
            f"writes are still kept in {journal}; run this again when it answers"
        )
    return recovered
