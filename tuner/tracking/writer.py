"""The background writer: MLflow writes queued, sent by a process of their own, merged, and kept
in the journal while a server is down."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.queues
import os
import queue
import signal
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeAlias

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient

from tuner.core.errors import UsageError
from tuner.core.quiet import QUIET_LOGGERS
from tuner.core.secrets import mask_secrets
from tuner.core.terminal import note
from tuner.tracking.journal import Journal
from tuner.tracking.store import health_url, is_server, unanswered
from tuner.tracking.tags import TRIAL_ROLE, Tag, child_runs, new_child_run
from tuner.tracking.values import log_batch

PROBE_S = 10  # while a server is down, how often the writer asks whether it answers again
# How long the writer waits, after a write arrives, for more before it sends: a short trial's
# start, epochs and end then merge into one write (3 store calls, not 5: each costs ms of CPU
# on the cores the trials and Tune's loop use). A UI a quarter of a second behind is not
# behind.
LINGER_S = 0.25
# The writer's CPU priority: the lowest, below Ray's trial workers (niceness 15). Its writes can
# wait (the journal keeps them); a trial, or a trial worker that Tune's loop waits on as it
# starts, should not wait for them.
NICENESS = 19


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


# The queues between a driver and its writer process (a thread's, in tests).
Requests: TypeAlias = "queue.Queue[tuple[int, Write] | str] | multiprocessing.queues.Queue[Any]"
Replies: TypeAlias = "queue.Queue[tuple[Any, ...]] | multiprocessing.queues.Queue[Any]"


NO_JOURNAL = "memory (no journal)"  # where a writer without a journal keeps what is unwritten


_NOW = "now"  # a queued request: write what is kept now (ask a down server at once)


_STOP = "stop"  # the same, then end the writer process


class Sender:
    """What the writer process sends, in order: each run's writes merged, and, while a tracking
    server does not answer, kept (with every write after them) and sent when it answers again.

    A write the store refuses is reported (``errors``). A write that fails because a tracking
    server does not answer (after MLflow's own retries, minutes by default) is kept; the server
    is asked every PROBE_S seconds. (MLflow's own ``synchronous=False`` logging sends batches
    from a pool of threads, in no set order within a run, and can't queue ``set_terminated``.)
    """

    def __init__(
        self,
        tracking_uri: str,
        kept: list[Write] | None = None,
        last: int = 0,
        say: Callable[[str], None] = note,
        keeping: str = NO_JOURNAL,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.kept = kept or []  # taken and not yet in the store, in order
        self.down = bool(self.kept)  # what an earlier driver kept: ask the server first
        self.next_probe = 0.0  # time.monotonic() of the next question to a down server
        self.last = last  # the number of the latest write taken (the journal's)
        self.written = last if not self.kept else 0  # every write up to it is in the store
        self.errors: list[str] = []
        self._say = say
        self._keeping = keeping  # where the driver keeps what is not written
        self._runs: dict[TrialRun, str] = {}  # trial runs found or created: their run ids
        self._listed: set[str] = set()  # parents whose trial runs are all in _runs

    def take(self, seq: int, write: Write) -> None:
        self.last = seq
        self.kept.append(write)

    def write_kept(self, *, now: bool) -> None:
        """Send what is kept, in order, unless the server is down (asked when it is time, or
        ``now``); what the store refuses goes to ``errors``; what does not get there is kept,
        with the rest, and the server is asked again in PROBE_S seconds."""
        if not self.kept:
            return
        if self.down:
            if not now and time.monotonic() < self.next_probe:
                return
            self.next_probe = time.monotonic() + PROBE_S
            if is_server(self.tracking_uri):  # a database or a folder: kept by a killed driver
                if unanswered(health_url(self.tracking_uri)):
                    return
                self._server(f"answers: writing the {len(self.kept)} writes kept")
            self.down = False
        writes = merged(self.kept)
        for i, write in enumerate(writes):
            try:
                self.send(write)
            except Exception as error:
                if not self._undelivered(error):
                    self.errors.append(f"run {write.run}: {type(error).__name__}: {error}")
                    continue
                self.kept, self.down = writes[i:], True
                self.next_probe = time.monotonic() + PROBE_S
                self._server(f"does not answer: its writes are kept in {self._keeping}")
                return
        self.kept, self.written = [], self.last

    def _undelivered(self, error: Exception) -> bool:
        """Whether a write failed on its way to a tracking server (it did not answer, after
        MLflow's own retries): kept; rather than refused by the store with a reason, which a
        server sends as a RestException: reported and dropped."""
        return is_server(self.tracking_uri) and not isinstance(error, RestException)

    def _server(self, what: str) -> None:
        self._say(f"tuner: the MLflow server at {mask_secrets(self.tracking_uri)} {what}")

    def send(self, write: Write) -> None:
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
        """Create the trial run ``write`` goes to, with ``tags`` (only this process makes
        runs)."""
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


ALIVE_CHECK_S = 1.0  # how often an idle writer process asks whether its driver still runs


def serve(
    sender: Sender,
    requests: Requests,
    replies: Replies,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """The writer process's loop: take what is queued in ``requests`` (numbered writes, or
    _NOW / _STOP) and send it; put in ``replies`` how far the store holds them (``written``)
    and, for each _NOW or _STOP, what the store refused and how many writes are kept. Ends
    on _STOP, or at once when ``alive`` says the driver is gone (its journal holds what was not
    sent: a resumed search sends it, and a second writer must not race it)."""
    while True:
        items = _take(sender, requests, alive)
        if items is None:
            return
        for item in items:
            if isinstance(item, tuple):
                sender.take(*item)
        written = sender.written
        sender.write_kept(now=any(isinstance(item, str) for item in items))
        if sender.written != written:
            replies.put(("written", sender.written))
        for item in items:
            if isinstance(item, str):
                replies.put(("done", sender.errors, len(sender.kept)))
                sender.errors = []
        if _STOP in items:
            return


def _take(
    sender: Sender, requests: Requests, alive: Callable[[], bool]
) -> list[tuple[int, Write] | str] | None:
    """What is queued: waits for something, or while the server is down, until it is time
    to ask it again (nothing, then); then for what follows within LINGER_S, unless asked
    to write now. None once the driver is gone."""
    while True:
        wait = ALIVE_CHECK_S
        if sender.down:
            wait = min(wait, max(0.0, sender.next_probe - time.monotonic()))
        try:
            items = [requests.get(timeout=wait)]
            break
        except queue.Empty:
            if not alive():
                return None
            if sender.down and time.monotonic() >= sender.next_probe:
                return []
    until = time.monotonic() + LINGER_S
    while not isinstance(items[-1], str) and (left := until - time.monotonic()) > 0:
        try:
            items.append(requests.get(timeout=left))
        except queue.Empty:
            break
    while True:  # only this process takes from the queue
        try:
            items.append(requests.get_nowait())
        except queue.Empty:
            return items


def _writer_process(
    tracking_uri: str,
    kept: list[dict[str, Any]],
    last: int,
    keeping: str,
    requests: Requests,
    replies: Replies,
    driver: dict[str, Any],
    driver_alive: Connection,
) -> None:
    """The writer process: the driver's environment, folder and log levels (``_driver``: a
    forkserver's child inherits none of them), then ``serve`` until told to stop, or until the
    driver is gone (``driver_alive``, a pipe only the driver writes to, reads as ended)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    os.setpriority(os.PRIO_PROCESS, 0, NICENESS)
    os.environ.clear()
    os.environ.update(driver["environment"])
    os.chdir(driver["cwd"])  # a relative sqlite URI
    for name, level in driver["log_levels"].items():
        logging.getLogger(name).setLevel(level)

    def say(text: str) -> None:
        replies.put(("note", text))

    sender = Sender(tracking_uri, [Write.of_json(w) for w in kept], last, say, keeping)
    serve(sender, requests, replies, alive=lambda: not driver_alive.poll())


def _driver() -> dict[str, Any]:
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    return {"environment": dict(os.environ), "cwd": os.getcwd(), "log_levels": levels}


# The writer processes fork from one server process that has imported MLflow: a search starts
# one for its trials and one for its closing phase, and a test session many more.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


class Writer:
    """A driver's MLflow writes, sent by a process of their own: Tune's event loop never waits
    on the store (a sqlite commit or an HTTP round trip per epoch of every trial), and the
    store's work (tens of ms of CPU a trial in MLflow's sqlite store) never holds the driver's
    GIL. Each write is kept in the ``journal`` before it is queued, and marked there once the
    store holds it, so nothing is lost while a server is down or when the driver is killed.
    """

    def __init__(self, tracking_uri: str, journal: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.journal = Journal(journal) if journal else None
        # What an earlier driver kept and never wrote: sent first, once the server answers.
        kept = self.journal.unwritten if self.journal else []
        self.recovered = len(kept)
        self._seq = self.journal.seq if self.journal else 0  # the latest write's number
        self._written = self._seq if not kept else 0  # every write up to it is in the store
        self._requests: Requests = _CONTEXT.Queue()
        # The journal holds every write: a driver that exits before close() (an error, or a
        # writer process that died with writes queued past the pipe's room) must not wait at
        # exit for a process that will never read them.
        self._requests.cancel_join_thread()
        self._replies: Replies = _CONTEXT.Queue()
        # Held open by this driver only: the writer process stops when it ends, however it ends.
        alive_end, self._alive = _CONTEXT.Pipe(duplex=False)
        keeping = str(journal) if journal else NO_JOURNAL
        args = (tracking_uri, kept, self._seq, keeping, self._requests, self._replies)
        args += (_driver(), alive_end)
        # A daemon: ended with the driver's interpreter; flush() is what waits for writes.
        self._process = _CONTEXT.Process(
            target=_writer_process, args=args, name="tuner-mlflow", daemon=True
        )
        self._process.start()
        alive_end.close()  # the process has its own copy
        self._told_dead = False  # whether _died has said so

    def put(self, write: Write) -> None:
        if self.journal:
            self._seq = self.journal.append(write.as_json())
        else:
            self._seq += 1
        if self._process.exitcode is None:
            self._requests.put((self._seq, write))
        else:  # nobody would read the queue: the journal keeps the write
            self._died()
        self._read_replies()

    def flush(self) -> int:
        """Wait until every queued write is written, or kept while the server does not answer
        (asked once more now); warn about those the store refused. How many are kept."""
        return self._ask(_NOW)

    def close(self) -> int:
        """``flush``, and end the process."""
        kept = self._ask(_STOP)
        self._process.join()
        self._requests.close()
        self._alive.close()
        return kept

    def _ask(self, request: str) -> int:
        self._requests.put(request)
        while True:
            # Whether it runs, asked before reading: what a process that has ended sent is all
            # in the queue already (it answers, then ends, at a _STOP).
            running = self._process.is_alive()
            try:
                reply = self._replies.get(timeout=ALIVE_CHECK_S if running else 0)
            except queue.Empty:
                if running:
                    continue
                return self._died()
            if reply[0] == "done":
                _, errors, kept = reply
                _warn(errors)
                return kept
            self._read(reply)

    def _read_replies(self) -> None:
        while True:
            try:
                reply = self._replies.get_nowait()
            except queue.Empty:
                return
            self._read(reply)

    def _read(self, reply: tuple[Any, ...]) -> None:
        if reply[0] == "note":
            note(reply[1])
        elif reply[0] == "written":
            self._written = reply[1]
            if self.journal:
                self.journal.written(self._written)

    def _died(self) -> int:
        """How many writes the ended process did not write; said once."""
        kept = self._seq - self._written
        if not self._told_dead:
            self._told_dead = True
            where = f"kept in {self.journal.path}" if self.journal else "lost (no journal)"
            ended = f"the MLflow writer process ended (exit code {self._process.exitcode})"
            note(f"tuner: {ended}: {kept} writes {where}")
        return kept


def _warn(errors: list[str]) -> None:
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        warnings.warn(
            f"tuner: {len(errors)} MLflow write(s) failed: {errors[0]}{more}", stacklevel=4
        )


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
    """This driver's background writer to ``tracking_uri``, keeping what the store does not
    take in ``journal``, started on first use."""
    key = (tracking_uri, journal)
    if key not in _writers:
        _writers[key] = Writer(tracking_uri, journal)
    return _writers[key]


def flush_writes(tracking_uri: str, journal: Path | None = None, *, close: bool = False) -> int:
    """Wait for the queued writes to ``tracking_uri`` (warning of refused ones); ``close`` also
    ends the writer's process (the end of an experiment: a later write starts a new one, which
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
