"""The background writer: the driver's MLflow writes queued, kept in the journal until the store
holds them, and sent by a process of their own (``tuner.tracking.sender``)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import warnings
from pathlib import Path

from tuner.core.errors import UsageError
from tuner.core.quiet import QUIET_LOGGERS
from tuner.core.secrets import mask_secrets
from tuner.core.terminal import note
from tuner.tracking import sender
from tuner.tracking.journal import Journal
from tuner.tracking.writes import Write

# The writer process is forked from multiprocessing's fork server (a clean process that has
# imported the sender once), not from the driver (which runs Ray's threads): a new writer starts
# in milliseconds, not the seconds an import of MLflow takes.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([sender.__name__])
ANSWER_CHECK_S = 1.0  # while waiting for the writer's answer, how often to check it still runs


class Writer:
    """The driver's side of the writer process, so Tune's event loop never waits on the store
    (a sqlite commit or an HTTP round trip per epoch of every trial) and never shares its
    interpreter with MLflow's work. ``put`` keeps a write in the ``journal`` and queues it;
    ``flush`` waits until the store holds every write queued (or, while a tracking server does
    not answer, until they are kept: ``tuner.tracking.sender.Sender`` says how) and warns about
    those the store refused."""

    def __init__(self, tracking_uri: str, journal: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.journal = Journal(journal) if journal else None
        # What an earlier driver kept and never wrote: sent first, once the server answers.
        kept = self.journal.unwritten if self.journal else []
        self.recovered = len(kept)
        self._kept = len(kept)  # as the writer last said
        self._errors: list[str] = []
        self._asked = 0  # the number of the latest request
        self._lock = threading.Lock()  # the journal's file and the inbox, as one
        self._inbox: multiprocessing.Queue = _CONTEXT.Queue()
        self._outbox: multiprocessing.Queue = _CONTEXT.Queue()
        setting = {
            "cwd": os.getcwd(),  # a relative sqlite path or artifact folder means the driver's
            "environ": dict(os.environ),  # credentials, MLflow's timeouts and retries
            "log_levels": {name: logging.getLogger(name).level for name in QUIET_LOGGERS},
        }
        last = self.journal.seq if self.journal else 0
        arguments = (tracking_uri, kept, last, setting, self._inbox, self._outbox)
        # A daemon: a driver that ends without close() does not wait for it (the journal keeps
        # what it had not written); flush() is what waits for writes.
        self._process = _CONTEXT.Process(
            target=sender.serve, args=arguments, name="tuner-mlflow", daemon=True
        )
        # Started aside: the first start also starts the fork server, which imports MLflow
        # (seconds); writes queue up meanwhile.
        self._starting = threading.Thread(target=self._process.start, daemon=True)
        self._starting.start()

    def put(self, write: Write) -> None:
        self._hear()
        with self._lock:
            kept = write.as_json()
            seq = self.journal.append(kept) if self.journal else 0
            self._inbox.put((seq, kept))

    def flush(self) -> int:
        """Wait until every queued write is written, or kept while the server does not answer
        (asked once more now); warn about those the store refused. How many are kept."""
        return self._ask(sender.NOW)

    def close(self) -> int:
        """``flush``, and end the writer process."""
        kept = self._ask(sender.STOP)
        self._process.join()
        return kept

    def _ask(self, request: str) -> int:
        self._starting.join()
        self._asked += 1
        self._inbox.put((request, self._asked))
        while True:
            try:
                answer = self._outbox.get(timeout=ANSWER_CHECK_S)
            except queue.Empty:
                if not self._process.is_alive():
                    raise RuntimeError(
                        f"tuner's MLflow writer process ended (exit code "
                        f"{self._process.exitcode}) with writes queued"
                    ) from None
                continue
            if self._heard(answer) == self._asked:
                break
        errors, self._errors = self._errors, []
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            warnings.warn(
                f"tuner: {len(errors)} MLflow write(s) failed: {errors[0]}{more}", stacklevel=3
            )
        return self._kept

    def _hear(self) -> None:
        """Take in what the writer said so far, without waiting."""
        while True:
            try:
                self._heard(self._outbox.get_nowait())
            except queue.Empty:
                return

    def _heard(self, answer: tuple) -> int | None:
        """Act on one of the writer's answers; the request it answers, if it does."""
        kind, *rest = answer
        server = f"the MLflow server at {mask_secrets(self.tracking_uri)}"
        if kind == sender.WRITTEN and self.journal:
            with self._lock:  # no put() in between, which would make a later write the latest
                self.journal.written(rest[0])
        elif kind == sender.DOWN:
            where = self.journal.path if self.journal else "memory (no journal)"
            note(f"tuner: {server} does not answer: its writes are kept in {where}")
        elif kind == sender.ANSWERS:
            note(f"tuner: {server} answers: writing the {rest[0]} writes kept")
        elif kind == sender.FLUSHED:
            token, self._kept, errors = rest
            self._errors += errors
            return token
        return None


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
