"""A real multi-node Ray cluster on loopback (Ray's own test harness): trials spread, survive."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

SPEC = """\
name: on_cluster
data: {dataset: digits, seed: 0}
search: {algorithm: random, num_samples: 6, seed: 0}
scheduler: {type: fifo, max_epochs: 4}
max_failures: 3
resources: {cpu: 1}
space:
  model: {name: simple_cnn, width: {int: [16, 32]}, depth: 2}
  optimizer: {name: adam, lr: {loguniform: [1e-3, 1e-2]}}
  batch_size: 32
"""


@pytest.fixture
def cluster():
    """A head and two workers, each with its own CPU, as separate Ray nodes."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


def _start(tmp_path: Path, address: str) -> tuple[subprocess.Popen, str]:
    spec = tmp_path / "on_cluster.yaml"
    spec.write_text(SPEC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        sys.executable,
        "-m",
        "tuner",
        "run",
        str(spec),
        "--address",
        address,
        "--tracking-uri",
        uri,
        "--storage",
        str(tmp_path / "ray"),
    ]
    log = (tmp_path / "driver.log").open("w")
    return subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT), uri


def _trials(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("on_cluster")
    return client.search_runs([experiment.experiment_id], "tags.`tuner.role` = 'trial'")


@pytest.mark.slow
def test_trials_spread_over_nodes_and_are_all_recorded(cluster, tmp_path):
    ray_cluster, _ = cluster
    driver, uri = _start(tmp_path, ray_cluster.address)
    assert driver.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    trials = _trials(uri)
    assert len(trials) == 6
    assert {t.data.tags["tuner.status"] for t in trials} == {"completed"}
    nodes = {t.data.tags["tuner.node_id"] for t in trials}
    assert len(nodes) > 1, nodes


@pytest.mark.slow
def test_losing_a_worker_mid_search_loses_no_trial(cluster, tmp_path):
    ray_cluster, workers = cluster
    driver, uri = _start(tmp_path, ray_cluster.address)
    deadline = time.monotonic() + 180
    # Wait until some trial reports from the worker we are about to lose.
    doomed = workers[0].node_id
    running_there = False
    while not running_there and time.monotonic() < deadline and driver.poll() is None:
        try:
            running_there = any(
                t.data.tags.get("tuner.node_id") == doomed and t.info.status == "RUNNING"
                for t in _trials(uri)
            )
        except Exception:  # the store may not exist yet
            time.sleep(0.5)
    assert running_there, "no trial ran on the worker before the search ended"
    ray_cluster.remove_node(workers[0], allow_graceful=False)
    assert driver.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    trials = _trials(uri)
    assert len(trials) == 6
    assert len({t.data.tags["tuner.trial_id"] for t in trials}) == 6
    assert {t.data.tags["tuner.status"] for t in trials} == {"completed"}
    assert all(t.info.status == "FINISHED" for t in trials)
