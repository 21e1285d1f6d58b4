"""Starting Ray for a search, or joining a cluster, in the background.

A local Ray takes seconds to start (its processes wait on each other more than they compute),
and so does the driver's own preparation (importing torch and MLflow, opening the tracking
store, loading the data). `tuner run` begins starting Ray as soon as the spec is valid and waits
for it only when the search needs it. This module imports Ray alone: its caller imports the
rest while Ray starts.

Not done, measured: idle workers that import torch ahead (Ray's ``preload_python_modules``).
Tune starts each trial's worker with its own runtime env, so a trial never lands on an idle
worker, and workers that import torch before registering made the first trial start later.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import ray


class RayStart:
    """``ray.init`` in a background thread; ``wait()`` before using Ray, ``cancel()`` when the
    search stops before it needs Ray (a usage error found while Ray was starting)."""

    def __init__(
        self, address: str | None, *, forward_worker_output: bool, verbose: bool = False
    ) -> None:
        _configure_tune()
        if threading.current_thread() is threading.main_thread():
            # What ray.init does when it runs in the main thread: SIGTERM ends the driver by
            # sys.exit, so Ray shuts down and MLflow's runs are marked, not left mid-write.
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._began = not ray.is_initialized()  # a test session or a bench may have started it
        if not self._began:
            self._ready.set()
            return
        start = threading.Thread(
            target=self._start_and_keep,
            args=(address or os.environ.get("RAY_ADDRESS"),),
            kwargs={"forward_worker_output": forward_worker_output, "verbose": verbose},
            name="tuner-ray-start",
            daemon=True,
        )
        start.start()

    def wait(self) -> None:
        """Block until Ray is up; its start's error, if any, is raised here."""
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Stop the Ray this start began (after it is up: a half-started Ray would be left)."""
        self._ready.wait()
        if self._began and ray.is_initialized():
            ray.shutdown()

    def _start_and_keep(self, address: str | None, **options: bool) -> None:
        try:
            _init(address, **options)
        except BaseException as error:  # raised again by wait(), in the search's thread
            self._error = error
        finally:
            self._ready.set()
        # A local Ray's processes are killed when the thread that started them ends (Ray sets
        # PR_SET_PDEATHSIG on them), so this thread stays until the process exits.
        threading.Event().wait()


def _init(address: str | None, *, forward_worker_output: bool, verbose: bool) -> None:
    # Trials' own loggers (Ray's checkpoint lines, forwarded on a terminal) at warnings only.
    quiet = None if verbose else ray.LoggingConfig(log_level="WARNING")
    if address:
        ray.init(address=address, log_to_driver=forward_worker_output, logging_config=quiet)
        return
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=forward_worker_output,
        logging_config=quiet,
    )


def _configure_tune() -> None:
    """Tune's settings that are environment variables, read when Tune starts its loop."""
    # The classic reporter (--verbose) lets us trim the table to the metric and the sampled
    # parameters.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C raises KeyboardInterrupt out of fit() (Tune's own handler would end the search
    # as if it had finished), so tuner marks MLflow's runs and prints how to resume.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # Tune's record of each trial's results is its result.json (tuner.commands.run adds that
    # logger); the CSV and TensorBoard copies it would also write repeat it, and writing them
    # takes the driver time on every result of every trial, on the way to the trial's next epoch.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
