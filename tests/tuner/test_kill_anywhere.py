"""`tuner run` killed with SIGKILL at generated moments, then resumed: nothing lost, nothing twice.

The idea of SQLite's crash tests and FoundationDB's simulation, at tuner's scale: the moments are
not picked by hand. They are every phase boundary the program announces on its output (the
search under way, each trial's end, the last trial's end, the test evaluation, the plots, the
model's registration, the final MLflow writes) and seeded random instants after them; a case
kills `tuner run` at one moment and, in some cases, the `tuner resume` that follows at another,
then resumes until the search ends. After each case: the last resume exits 0 within RESUME_S (a
hang fails), and MLflow holds one parent run, each trial once with every epoch once, nothing
RUNNING, exactly one best, test_acc on the parent, one registered version; the journal is gone.

The default suite tries QUICK_CASES cases (about a minute each on 2 cores); more, by hand:
``TUNER_KILL_CASES=30 TUNER_KILL_SEED=7 python -m pytest -s tests/tuner/test_kill_anywhere.py``.
A failing case prints its moments and its seed: the same seed replays it.
"""

from __future__ import annotations

import itertools
import os
import queue
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import own_tuner_env
from tests.processes import kill_group
from tuner.publishing.anytime import search_curve
from tuner.tracking.files import JOURNAL
from tuner.tracking.records import latest_parent, trials_of
from tuner.tracking.tags import PARENT_ROLE, Tag

NAME, TRIALS, EPOCHS = "killed", 4, 3
SPEC = f"""\
name: {NAME}
data: {{dataset: digits, seed: 0, max_train: 500}}
search: {{algorithm: optuna, num_samples: {TRIALS}, max_concurrent: 2, seed: 0}}
scheduler: {{type: fifo, max_epochs: {EPOCHS}}}
final: {{repeats: 1}}  # no re-training of tied configs: a kill case stays about a minute
resources: {{cpu: 1}}
space:
  model: {{name: simple_cnn, width: {{int: [8, 16]}}, depth: 1}}
  optimizer: {{name: adam, lr: {{loguniform: [1e-2, 3e-2]}}}}
  batch_size: 16
"""
# The phase boundaries tuner announces, in order, by the line that starts each (off a terminal).
PHASES = {
    "under way": r"trials \d+/\d+ done",
    "a trial ended": r"trial [0-9a-f]+ (completed|early_stopped|errored)",
    "the last trial ended": rf"trials {TRIALS}/{TRIALS} done",
    "test evaluation": r"testing the best trial",
    "plots": r"logging plots and tables",
    "registration": r"registering the model",
    "final writes": r"recording the outcome in MLflow",
}
RESUME_S = 300  # a whole resumed search on a loaded 2-core machine; more is a hang
QUICK_CASES = 3
RANDOM_DELAY_S = 3.0  # a random instant: up to this long after a phase boundary


@dataclass(frozen=True)
class Moment:
    """When to kill: ``delay_s`` seconds after the first line of phase ``phase``."""

    phase: str
    delay_s: float = 0.0

    def __str__(self) -> str:
        return f"{self.phase} +{self.delay_s:.1f}s"


def cases(count: int, seed: int) -> list[tuple[Moment, ...]]:
    """``count`` kill cases: each phase boundary in turn, then seeded random instants, some with
    a second kill during the resume. The first cases are the ones users lost searches to: the
    closing phase, and a kill during the resume itself."""
    rng = random.Random(seed)
    boundaries = [Moment(phase) for phase in PHASES]
    first = [(Moment("test evaluation"),), (Moment("a trial ended"), Moment("under way", 2.0))]
    generated = first + [(moment,) for moment in boundaries if (moment,) not in first]
    while len(generated) < count:
        moments = [Moment(rng.choice(list(PHASES)), rng.uniform(0, RANDOM_DELAY_S))]
        if rng.random() < 0.5:  # and kill the resume as well
            moments.append(Moment(rng.choice(list(PHASES)), rng.uniform(0, RANDOM_DELAY_S)))
        generated.append(tuple(moments))
    return generated[:count]


def _lines(process: subprocess.Popen) -> queue.Queue[str | None]:
    """The process's output lines as they come (None once it closes its output)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def run_until(command: list[str], cwd: Path, moment: Moment | None) -> tuple[int | None, str]:
    """Run a `tuner` command in its own session and SIGKILL its whole group (the Ray it
    started too) at ``moment``; (its exit code, None if killed; what it printed)."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=own_tuner_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines, printed, deadline = _lines(process), [], time.monotonic() + RESUME_S
    pattern = re.compile(PHASES[moment.phase]) if moment else None
    try:
        while (line := lines.get(timeout=max(deadline - time.monotonic(), 0.1))) is not None:
            printed.append(line)
            if pattern and pattern.match(line):
                time.sleep(moment.delay_s)
                if process.poll() is None:
                    kill_group(process)
                    return None, "\n".join(printed)
        return process.wait(timeout=30), "\n".join(printed)
    except queue.Empty:
        hung = f"{command[3]} hung for {RESUME_S} s:\n" + "\n".join(printed[-30:])
        raise AssertionError(hung) from None
    finally:
        if process.poll() is None:
            kill_group(process)


def check_whole_search(uri: str, folder: Path) -> None:
    """What MLflow holds of the search once it ended, however often it was killed."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [run for run in runs if run.data.tags.get(Tag.ROLE) == PARENT_ROLE]
    assert len(parents) == 1, "one parent run"
    assert [run.info.run_id for run in runs if run.info.status == "RUNNING"] == []
    parent = latest_parent(client, NAME)
    assert parent.info.status == "FINISHED"
    assert 0.0 < parent.data.metrics["test_acc"] <= 1.0  # tested once, on the parent
    records = trials_of(client, parent)
    assert sorted({t.trial_id for t in records}) == sorted(t.trial_id for t in records)
    assert len(records) == TRIALS, "each trial once"
    assert sum(t.best for t in records) == 1, "exactly one best"
    for trial in records:
        steps = [m.step for m in client.get_metric_history(trial.run_id, "val_acc")]
        assert steps == list(range(1, EPOCHS + 1)), f"every epoch once: {trial.trial_id}"
    curve = search_curve(client, parent)  # kept on the parent as the epochs came, resumed
    assert all(a.epochs < b.epochs and a.best <= b.best for a, b in itertools.pairwise(curve))
    # A trial the killed driver started after Tune last saved its state trained epochs too,
    # though its run is removed: the curve counts them.
    assert curve[-1].epochs >= TRIALS * EPOCHS
    assert curve[-1].best >= max(
        m.value for t in records for m in client.get_metric_history(t.run_id, "val_acc")
    )
    (version,) = client.search_model_versions(f"name = '{NAME}'")
    assert version.run_id == parent.info.run_id
    assert not (folder / "tuner_results" / NAME / JOURNAL).exists(), "an empty journal"


def kill_and_resume(folder: Path, moments: tuple[Moment, ...]) -> str:
    """Kill `tuner run` at ``moments[0]``, each resume at the next; resume until the search
    ends. What each command printed last, for a failure's message."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    (folder / "spec.yaml").write_text(SPEC)
    tuner = [sys.executable, "-m", "tuner"]
    command = [*tuner, "run", "spec.yaml", "--tracking-uri", uri]
    resume = [*tuner, "resume", NAME, "--tracking-uri", uri]
    log, pending = [], list(moments)
    while True:
        code, printed = run_until(command, folder, pending.pop(0) if pending else None)
        log.append(f"$ {' '.join(command[3:5])} ({'killed' if code is None else code})")
        log.append(printed[-2000:])
        if code == 0:
            return "\n".join(log)
        if code is None and _finished(uri):  # killed as it exited: nothing left to do
            return "\n".join(log)
        if code is None:
            command = resume
            continue
        # A kill as the final writes went out leaves them in the journal: `tuner resume` says
        # to write them with `tuner sync`, which a user then runs.
        assert code == 2 and "python -m tuner sync" in printed, "\n".join(log)
        command = [*tuner, "sync", NAME, "--tracking-uri", uri]


def _finished(uri: str) -> bool:
    return latest_parent(MlflowClient(uri), NAME).info.status == "FINISHED"


def _count_and_seed() -> tuple[int, int]:
    count = int(os.environ.get("TUNER_KILL_CASES", QUICK_CASES))
    return count, int(os.environ.get("TUNER_KILL_SEED", 0))


@pytest.mark.slow
def test_a_search_killed_at_generated_moments_resumes_to_one_whole_search(tmp_path, capsys):
    count, seed = _count_and_seed()
    tried = cases(count, seed)
    for number, moments in enumerate(tried):
        folder = tmp_path / f"case{number}"
        folder.mkdir()
        described = ", then ".join(map(str, moments))
        log = kill_and_resume(folder, moments)
        try:
            check_whole_search(f"sqlite:///{folder / 'mlflow.db'}", folder)
        except AssertionError as error:
            raise AssertionError(
                f"case {number} (seed {seed}): kill at {described}\n{log}"
            ) from error
        with capsys.disabled():
            print(f"\nkill case {number + 1}/{len(tried)} (seed {seed}) passed: {described}")
    with capsys.disabled():
        print(f"\n{len(tried)} kill cases tried ({sum(map(len, tried))} kill points), seed {seed}")


def test_the_cases_cover_every_phase_boundary_then_random_instants():
    generated = cases(len(PHASES) + 4, seed=1)
    assert {moments[0].phase for moments in generated[: len(PHASES) + 1]} == set(PHASES)
    assert generated == cases(len(PHASES) + 4, seed=1)  # a seed replays its cases
    assert any(moment.delay_s > 0 for moments in generated for moment in moments)
    assert generated[0] == (Moment("test evaluation"),)  # the moment users lost searches to
