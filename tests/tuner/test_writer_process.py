"""The MLflow writer's own process: it leaves Ctrl-C to its driver and ends with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuner.tracking import writer as writes
from tuner.tracking.experiment import Experiment
from tuner.tracking.journal import Journal
from tuner.tracking.tags import SearchTags

REPO = Path(__file__).resolve().parents[2]


def test_ctrl_c_at_a_terminal_leaves_the_writes_to_the_driver(tmp_path):
    """A terminal sends Ctrl-C to every process of the command; the driver handles it (it
    marks the runs interrupted, through the writer), so the writer process must live on."""
    experiment = Experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "ctrl_c")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: ctrl_c\n")
    experiment.start(spec, SearchTags())
    writer = writes.writer(experiment.tracking_uri)
    writer.flush()  # its process is in its loop
    os.kill(writer._process.pid, signal.SIGINT)
    experiment.log_metrics({"val_acc": 0.5})
    assert writes.flush_writes(experiment.tracking_uri, close=True) == 0
    assert experiment.client.get_run(experiment.parent_id).data.metrics == {"val_acc": 0.5}


def test_the_writer_process_runs_below_the_trials(tmp_path):
    """At the lowest CPU priority: the trials and the workers Tune waits on come first."""
    driver = os.getpriority(os.PRIO_PROCESS, 0)
    writer = writes.writer(f"sqlite:///{tmp_path / 'mlflow.db'}")
    writer.flush()  # its process is in its loop
    assert os.getpriority(os.PRIO_PROCESS, writer._process.pid) == writes.NICENESS == 19
    assert os.getpriority(os.PRIO_PROCESS, 0) == driver  # the driver's own is left alone
    writer.close()


KILLED_DRIVER = """\
import os, sys
from tuner.tracking.writer import writer

started = writer(sys.argv[1])
started.flush()
print(started._process.pid, flush=True)
os._exit(9)  # killed: the writer is never closed
"""


def ended(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # not yet reaped


@pytest.mark.slow
def test_the_writer_process_ends_with_a_killed_driver(tmp_path):
    """Within about ALIVE_CHECK_S: it would otherwise write on beside the driver's resume."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Its output is a pipe the writer process holds too: run() returns once that has ended.
    driver = subprocess.run(
        [sys.executable, "-c", KILLED_DRIVER, uri],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert driver.returncode == 9, driver.stderr
    pid = int(driver.stdout)
    deadline = time.monotonic() + 5 * writes.ALIVE_CHECK_S
    while not ended(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ended(pid)


DEAD_WRITER = """\
import os, signal, sys
from pathlib import Path
from tuner.tracking.writer import Write, writer

started = writer(sys.argv[1], Path(sys.argv[2]))
started.flush()
os.kill(started._process.pid, signal.SIGKILL)
for i in range(int(sys.argv[3])):  # far more than a pipe holds: nobody reads them
    started.put(Write(run="a-run", texts={f"note{i}.txt": "x" * 1000}))
print("queued", flush=True)
"""


@pytest.mark.slow
def test_a_driver_whose_writer_died_exits_with_its_writes_in_the_journal(tmp_path):
    """Its writes are in the journal (a resume or sync sends them): the driver says so at the
    first write the process can't take, queues no more, and its exit does not wait for a
    process that will never read them."""
    uri, journal = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "journal.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.run(
        [sys.executable, "-c", DEAD_WRITER, uri, str(journal), "500"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert (driver.returncode, driver.stdout) == (0, "queued\n"), driver.stderr
    assert len(Journal(journal).unwritten) == 500
    # Said once, at the first write the process could not take (the script never flushes).
    assert driver.stderr.count("MLflow writer process ended (exit code -9)") == 1, driver.stderr
    assert f"kept in {journal}" in driver.stderr
