"""A real multi-node Ray cluster on loopback (Ray's own test harness): trials spread, survive,
and read file datasets on their own nodes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from tuner.tracking.tags import TRIAL_ROLE, Status, Tag, tag_filter

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


def home_env(home: Path) -> dict[str, str]:
    """Environment variables that give a Ray process its own HOME. Ray looks for its auth token
    under ~/.ray; once a Ray started in this process has turned token auth on, a process with
    another HOME would not find it (and a raylet would time out), so the path is kept."""
    env = {"HOME": str(home)}
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    return env


def start_cluster(homes: list[Path] | None = None) -> tuple[Cluster, list]:
    """A head and two workers, each with one CPU (and, given ``homes``, its own HOME), as
    separate Ray nodes: ``(cluster, [head, worker, worker])``."""
    node_args = [{"num_cpus": 1} for _ in range(3)]
    for args, home in zip(node_args, homes or [], strict=False):
        args["env_vars"] = home_env(home)
    cluster = Cluster()
    nodes = [cluster.add_node(**args) for args in node_args]  # the first is the head
    cluster.wait_for_nodes()
    return cluster, nodes


@pytest.fixture
def cluster():
    cluster, nodes = start_cluster()
    yield cluster, nodes[1:]
    cluster.shutdown()


def _start(
    tmp_path: Path,
    address: str,
    spec_text: str = SPEC,
    home: Path | None = None,
    flags: tuple[str, ...] = (),
) -> tuple[subprocess.Popen, str]:
    """`tuner run` against the cluster, in a subprocess (with its own HOME, if given)."""
    spec = tmp_path / "on_cluster.yaml"
    spec.write_text(spec_text)
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
        *flags,
    ]
    env = {**os.environ, **home_env(home)} if home else None
    log = (tmp_path / "driver.log").open("w")
    return (
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT),
        uri,
    )


def _trials(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("on_cluster")
    return client.search_runs([experiment.experiment_id], tag_filter(Tag.ROLE, TRIAL_ROLE))


@pytest.mark.slow
def test_trials_spread_over_nodes_and_are_all_recorded(cluster, tmp_path):
    ray_cluster, _ = cluster
    driver, uri = _start(tmp_path, ray_cluster.address)
    assert driver.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    trials = _trials(uri)
    assert len(trials) == 6
    assert {t.data.tags[Tag.STATUS] for t in trials} == {Status.COMPLETED}
    nodes = {t.data.tags[Tag.NODE_ID] for t in trials}
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
                t.data.tags.get(Tag.NODE_ID) == doomed and t.info.status == "RUNNING"
                for t in _trials(uri)
            )
        except Exception:  # the store may not exist yet
            time.sleep(0.5)
    assert running_there, "no trial ran on the worker before the search ended"
    ray_cluster.remove_node(workers[0], allow_graceful=False)
    assert driver.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    trials = _trials(uri)
    assert len(trials) == 6
    assert len({t.data.tags[Tag.TRIAL_ID] for t in trials}) == 6
    errors = [t.data.tags.get(Tag.ERROR) for t in trials if Tag.ERROR in t.data.tags]
    assert {t.data.tags[Tag.STATUS] for t in trials} == {Status.COMPLETED}, errors
    assert all(t.info.status == "FINISHED" for t in trials)


# ---------------------------------------------------------------------------------------------
# File datasets: each node reads data.root itself. On loopback every node shares one disk, so
# each node gets its own HOME (the raylet's environment, which its workers inherit), and a root
# under ~ is a different folder on each node, as on machines that share nothing.
# ---------------------------------------------------------------------------------------------

FILE_DATA = (  # keep_in: cache, each node's own (small data would go by the object store)
    "data: {dataset: image_folder, root: ~/datasets/digits, keep_in: cache, "
    "options: {image_size: 8, grayscale: true}}"
)
FILE_SPEC = SPEC.replace("data: {dataset: digits, seed: 0}", FILE_DATA)
assert FILE_DATA in FILE_SPEC, "SPEC's data line changed: update FILE_SPEC"
CLASSICAL_SPEC = f"""\
name: on_cluster
trainable: classical
{FILE_DATA}
search: {{algorithm: random, num_samples: 6, seed: 0}}
scheduler: {{type: fifo}}
final: {{repeats: 1}}  # the driver tests the best trial itself (repeats run on the nodes)
resources: {{cpu: 1}}
space:
  features: {{name: bag_of_sift, step: 4, patch_size: 8, resize: 32, vocab_size: 16}}
  classifier: {{name: knn, k: {{int: [1, 10]}}}}
"""


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    """One cluster for the file-dataset tests, each node with its own empty HOME:
    ``(cluster, {node id: its HOME}, the driver's HOME)``."""
    root = tmp_path_factory.mktemp("homes")
    homes = {name: root / name for name in ("driver", "head", "worker1", "worker2")}
    for home in homes.values():
        home.mkdir()
    cluster, nodes = start_cluster([homes["head"], homes["worker1"], homes["worker2"]])
    home_of = {node.node_id: homes[name] for node, name in zip(nodes, list(homes)[1:], strict=True)}
    yield cluster, home_of, homes["driver"]
    cluster.shutdown()


def _write_digits(folder: Path, digits, write_image_tree) -> None:
    write_image_tree(folder, digits[0][:300], digits[1][:300], classes=3)


@pytest.mark.slow
def test_each_node_reads_data_root_and_caches_features_on_its_own_disk(
    homes, tmp_path, digits, write_image_tree
):
    ray_cluster, home_of, driver_home = homes
    for home in [*home_of.values(), driver_home]:
        _write_digits(home / "datasets" / "digits", digits, write_image_tree)
    driver, uri = _start(tmp_path, ray_cluster.address, CLASSICAL_SPEC, home=driver_home)
    assert driver.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    trials = _trials(uri)
    assert len(trials) == 6
    assert {t.data.tags[Tag.STATUS] for t in trials} == {Status.COMPLETED}
    used = {t.data.tags[Tag.NODE_ID] for t in trials}
    # Tune reuses a finished trial's worker, so these second-long trials may all run on the
    # first node whose worker is ready (test_trials_spread_over_nodes shows the spread).
    assert used and used <= set(home_of), used
    # Each node cached the features in its own home; the vocabulary's key hashes the training
    # split, so the same entry name on every node and on the driver (which refit the best
    # config for the test) means every node read exactly the driver's splits.
    driver_vocabulary = _entries(driver_home, "vocabulary")
    assert len(driver_vocabulary) == 1
    for node, home in home_of.items():
        assert _entries(home, "vocabulary") == (driver_vocabulary if node in used else set())


def _entries(home: Path, kind: str) -> set[str]:
    return {p.name for p in (home / ".cache" / "tuner" / "features" / kind).glob("*.npy")}


@pytest.mark.slow
def test_a_root_only_the_driver_has_fails_each_trial_naming_its_node(
    homes, tmp_path, digits, write_image_tree
):
    ray_cluster, home_of, driver_home = homes
    # Not the other test's folder (the cluster is shared): this one only the driver has.
    _write_digits(driver_home / "datasets" / "mine", digits, write_image_tree)
    spec = FILE_SPEC.replace("~/datasets/digits", "~/datasets/mine")
    spec = spec.replace("num_samples: 6", "num_samples: 2")
    spec = spec.replace("max_failures: 3", "max_failures: 1")
    # --verbose: Tune's table of errored trials, which counts each trial's attempts.
    driver, uri = _start(
        tmp_path, ray_cluster.address, spec, home=driver_home, flags=("--verbose",)
    )
    code = driver.wait(timeout=300)
    log = (tmp_path / "driver.log").read_text()
    assert code == 2, log[-3000:]
    trials = _trials(uri)
    assert len(trials) == 2 and {t.data.tags[Tag.STATUS] for t in trials} == {Status.ERRORED}
    for trial in trials:
        error = trial.data.tags[Tag.ERROR]
        assert "data.root ~/datasets/mine is not readable on node " in error
        node = error.split(" is not readable on node ")[1].split()[0]
        assert node in home_of, error
        assert f"image_folder: {home_of[node] / 'datasets' / 'mine'} is not a directory" in error
        assert "copy the dataset to that path on every node" in error
    # Each trial was tried 1 + max_failures times (Tune's table of errored trials says so).
    assert len(re.findall(r"\| train_\w+ +\| +2 \| ", log)) == 2, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith("tuner: error: ") and "is not readable on node " in last, log[-3000:]
