"""Two searches started at once on a new sqlite store: both create it (MLflow's tables, then
Optuna's study beside it), real MLflow and Optuna in two processes that start together."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

ROUNDS = 3  # a lost race shows in most rounds without the lock: three make a pass mean something
PROCESSES = 2


def _create(uris: list[str], barrier: Any, outcomes: Any) -> None:
    """In a child process: open each new store as `tuner run` first does, all processes at once;
    what happened, per store, onto the ``outcomes`` queue."""
    from tuner.search.searchers import Study, new_study
    from tuner.spec.document import Spec
    from tuner.tracking.store import check_store

    spec = Spec(name="race")
    name = multiprocessing.current_process().name
    for uri in uris:
        barrier.wait()  # start together: the race is in the first seconds of a store
        try:
            check_store(uri)
            optuna_db = Path(uri.removeprefix("sqlite:///")).with_name("optuna.db")
            new_study(Study(f"sqlite:///{optuna_db}", f"race/{name}"), spec, [])
            outcomes.put("ok")
        except Exception as error:  # the outcome is the assertion: report it, don't die
            outcomes.put(f"{type(error).__name__}: {str(error)[:200]}")


@pytest.mark.slow  # two processes importing MLflow, three stores each: about 50 s
def test_two_processes_creating_a_new_store_at_once_both_succeed(tmp_path):
    uris = [f"sqlite:///{tmp_path / f'round{i}' / 'mlflow.db'}" for i in range(ROUNDS)]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, as `tuner run` is
    barrier, outcomes = context.Barrier(PROCESSES), context.Queue()
    processes = [
        context.Process(target=_create, args=(uris, barrier, outcomes), name=f"tuner{i}")
        for i in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [process.exitcode for process in processes] == [0] * PROCESSES
    assert [outcomes.get(timeout=1) for _ in range(ROUNDS * PROCESSES)] == ["ok"] * (
        ROUNDS * PROCESSES
    )
    for uri in uris:  # and the store works: written and read back
        client = MlflowClient(uri)
        run = client.create_run(client.create_experiment("after"))
        client.log_metric(run.info.run_id, "val_acc", 0.5)
        assert client.get_run(run.info.run_id).data.metrics == {"val_acc": 0.5}
