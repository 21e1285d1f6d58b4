"""The writer process: it sends the driver's queued MLflow writes to the store, in order, and
keeps them while a tracking server does not answer.

It runs in a process of its own (``tuner.tracking.writer.Writer`` starts it), not a thread of
the driver: MLflow's store calls are Python work (a trial's run costs ~30 ms of CPU in a sqlite
store), which in a thread would hold the driver's interpreter lock while Tune's loop waits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from typing import Any

from mlflow.entities import RunTag
from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient

from tuner.tracking.store import health_url, is_server, unanswered
from tuner.tracking.tags import TRIAL_ROLE, Tag, child_runs, new_child_run
from tuner.tracking.values import log_batch
from tuner.tracking.writes import TrialRun, Write, merged

PROBE_S = 10  # while a server is down, how often the writer asks whether it answers again
# How long the writer gathers writes before it sends them: a short trial's start, epochs and end
# then reach the store as 3 writes, not 5 or more (each a sqlite commit or an HTTP request).
# MLflow shows a trial's progress this much later.
GATHER_S = 1.0

# What the driver sends (the inbox): (seq, write as JSON) for a write, numbered by the journal;
# (NOW, n) to write what is kept now (a down server asked at once) and answer n; (STOP, n) the
# same, then end. What the writer answers (the outbox): (WRITTEN, seq) when the store holds every
# write up to seq; (DOWN, kept) when a server stops answering and (ANSWERS, kept) when it answers
# again, for the driver to say; (FLUSHED, n, kept, errors) to a request n.
NOW, STOP = "now", "stop"
WRITTEN, DOWN, ANSWERS, FLUSHED = "written", "down", "answers", "flushed"


def serve(
    tracking_uri: str,
    kept: list[dict[str, Any]],
    last: int,
    setting: dict[str, Any],
    inbox: multiprocessing.Queue,
    outbox: multiprocessing.Queue,
) -> None:
    """The writer process's body: the driver's working folder, environment and log levels (a
    process forked from the fork server has the server's), then the writes until STOP; it ends
    at once when the driver dies (what it had not written is in the journal), and ignores
    Ctrl-C."""
    # Ctrl-C reaches every process of the terminal's group: the driver's own handling decides
    # (Experiment.interrupt flushes), the writer writes on until it is told to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.chdir(setting["cwd"])
    os.environ.clear()
    os.environ.update(setting["environ"])
    for name, level in setting["log_levels"].items():
        logging.getLogger(name).setLevel(level)
    threading.Thread(target=_end_with_driver, daemon=True).start()
    Sender(tracking_uri, [Write.of_json(w) for w in kept], last, inbox, outbox).loop()


def _end_with_driver() -> None:
    driver = multiprocessing.parent_process()
    if driver is not None:
        driver.join()
        os._exit(0)


class Sender:
    """Sends the writes, in order, from one thread, so each run's writes keep their order. What
    queued up while it was writing (and for GATHER_S seconds after the first) is merged per run
    (a trial's start, epochs and end become one create_run, one log_batch and one
    set_terminated). A write the store refuses is reported to the next request. A write that
    fails because a tracking server does not answer (after MLflow's own retries, minutes by
    default) is kept with every write after it; the server is asked every PROBE_S seconds, and
    when it answers they are sent, in order. (MLflow's own ``synchronous=False`` logging sends
    batches from a pool of threads, in no set order within a run, and can't queue
    ``set_terminated``.)"""

    def __init__(
        self,
        tracking_uri: str,
        kept: list[Write],
        last: int,
        inbox: multiprocessing.Queue,
        outbox: multiprocessing.Queue,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.inbox, self.outbox = inbox, outbox
        # What an earlier driver kept and never wrote: sent first, once the server answers.
        self._kept = kept
        self._down = bool(kept)  # ask the server before sending what is kept
        self._next_probe = 0.0  # time.monotonic() of the next question to a down server
        self._last = last  # the journal's number of the latest write taken from the inbox
        self._runs: dict[TrialRun, str] = {}  # trial runs found or created: their run ids
        self._listed: set[str] = set()  # parents whose trial runs are all in _runs
        self._errors: list[str] = []

    def loop(self) -> None:
        while True:
            writes, requests = self._take()
            for seq, write in writes:
                self._last = seq
                self._kept.append(Write.of_json(write))
            self._write_kept(now=bool(requests))
            for _, token in requests:
                self.outbox.put((FLUSHED, token, len(self._kept), self._errors))
                self._errors = []
            if any(request == STOP for request, _ in requests):
                return

    def _take(self) -> tuple[list[tuple[int, dict]], list[tuple[str, int]]]:
        """What is queued, as writes and requests: waits for something, or while the server is
        down, until it is time to ask it again (nothing, then); then gathers what comes in the
        next GATHER_S seconds, unless a request came."""
        timeout = max(0.0, self._next_probe - time.monotonic()) if self._down else None
        try:
            items = [self.inbox.get(timeout=timeout)]
        except queue.Empty:
            return [], []
        gathered = time.monotonic() + GATHER_S
        while isinstance(items[-1][0], int):
            try:
                items.append(self.inbox.get(timeout=max(0.0, gathered - time.monotonic())))
            except queue.Empty:
                break
        while True:  # only this thread takes from the inbox
            try:
                items.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        writes = [item for item in items if isinstance(item[0], int)]
        return writes, [item for item in items if not isinstance(item[0], int)]

    def _write_kept(self, *, now: bool) -> None:
        """Send what is kept, in order, unless the server is down (asked when it is time, or
        ``now``); what the store refuses is reported to the next request; what does not get
        there is kept, with the rest, and the server is asked again in PROBE_S seconds."""
        if not self._kept:
            return
        if self._down:
            if not now and time.monotonic() < self._next_probe:
                return
            self._next_probe = time.monotonic() + PROBE_S
            if is_server(self.tracking_uri):  # a database or a folder: kept by a killed driver
                if unanswered(health_url(self.tracking_uri)):
                    return
                self.outbox.put((ANSWERS, len(self._kept)))
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
                self.outbox.put((DOWN, len(self._kept)))
                return
        self._kept = []
        self.outbox.put((WRITTEN, self._last))

    def _undelivered(self, error: Exception) -> bool:
        """Whether a write failed on its way to a tracking server (it did not answer, after
        MLflow's own retries): kept; rather than refused by the store with a reason, which a
        server sends as a RestException: reported and dropped."""
        return is_server(self.tracking_uri) and not isinstance(error, RestException)

    def _send(self, write: Write) -> None:
        tags = {tag.key: tag.value for tag in write.tags}  # the last value of each key
        run_id = self._found(write.run)
        created = run_id is None
        if run_id is None:  # a new run, created with its tags, RUNNING: two writes fewer
            run_id = self._create(write.run, write.start_time, tags)
            tags = {}
        as_tags = [RunTag(key, value) for key, value in tags.items()]
        log_batch(self.client, run_id, metrics=write.metrics, params=write.params, tags=as_tags)
        for path, text in write.texts.items():
            self.client.log_text(run_id, text, path)
        if write.status == "RUNNING" and not created:
            self.client.update_run(run_id, write.status)
        elif write.status not in (None, "RUNNING"):
            self.client.set_terminated(run_id, write.status, end_time=write.end_time)

    def _found(self, run: str | TrialRun) -> str | None:
        """The id of ``run``: a run id itself, a trial's run made by this or an earlier driver,
        or None (its trial's run is not made yet)."""
        if isinstance(run, str):
            return run
        if run.parent_id not in self._listed:
            self._list_runs(run)
        return self._runs.get(run)

    def _create(self, run: TrialRun, start_time: int | None, tags: dict[str, str]) -> str:
        # Only this thread makes runs: no other can have made it since _found.
        self._runs[run] = new_child_run(
            self.client,
            run.experiment_id,
            run.parent_id,
            f"trial_{run.trial_id}",
            {**tags, Tag.ROLE: TRIAL_ROLE, Tag.TRIAL_ID: run.trial_id},
            start_time=start_time,
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
