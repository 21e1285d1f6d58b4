"""cluster.yaml passes the validation `ray up` runs, and says what a tuner cluster needs.

`ray up` (ray.autoscaler._private.commands._bootstrap_config) does, in order: prepare_config
(merge the provider's defaults.yaml, node-type min/max workers), the provider's resource
autodetection (EC2 API), validate_config (Ray's ray-schema.json plus its cross-field checks),
then the provider's bootstrap (IAM, key pair, subnets: EC2 API). The two offline steps are run
here, unchanged; the cloud calls are what a credentialed `ray up` adds.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.providers import _NODE_PROVIDERS
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"


def _load() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _ray_up_validation(config: dict[str, Any]) -> dict[str, Any]:
    """The offline part of `ray up`'s config handling; raises what `ray up` would."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return _ray_up_validation(_load())


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _commands(config: dict[str, Any]) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands")
    keys += ("worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    return [command for key in keys for command in config.get(key) or []]


def test_passes_ray_up_validation(config):
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["region"]
    assert config["provider"]["type"] in _NODE_PROVIDERS  # `ray up`'s provider lookup


def test_a_misspelled_key_fails_ray_validation():
    """The validation is real: Ray's schema refuses what it does not know."""
    misspelled = _load()
    misspelled["setup_comands"] = misspelled.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        _ray_up_validation(misspelled)

    in_node_type = _load()
    in_node_type["available_node_types"]["gpu_worker"]["max_worker"] = 8
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _ray_up_validation(in_node_type)


def test_cpu_head_and_an_autoscaling_gpu_worker_type(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu, "no worker type declares a GPU"
    for node_type in gpu:
        assert node_type["min_workers"] == 0  # nothing bills until a search asks for GPUs
        assert node_type["max_workers"] >= 1
        assert node_type["resources"].get("CPU", 0) >= 1  # trials also ask for CPUs
        assert node_type["node_config"]["InstanceType"]
        # Driver and trials load each other's checkpoints: the same image (same torch).
        assert node_type["node_config"]["ImageId"] == head["node_config"]["ImageId"]
    # The global cap must not undercut the GPU type's own.
    assert config["max_workers"] >= sum(t["max_workers"] for t in gpu)


def test_the_repository_is_mounted_and_installed_from_the_mount(config):
    mounts = {remote: (REPO / local).resolve() for remote, local in config["file_mounts"].items()}
    remote_repo = [remote for remote, local in mounts.items() if local == REPO]
    assert remote_repo, f"no file mount carries the repository root: {config['file_mounts']}"
    assert (REPO / "search_spaces" / "cifar.yaml").is_file()  # carried with the root
    assert f"pip install -e {remote_repo[0]}" in config["setup_commands"]
    assert ".gitignore" in config["rsync_filter"]  # .venv, mlruns, ... stay home
    assert not any(re.search(r"\btorch(vision)?==", c) for c in _commands(config))


def test_every_node_fetches_the_data_cifar_yaml_reads(config):
    """Trials read data.root on their own node: each node (head and workers) needs the files."""
    root = yaml.safe_load((REPO / "search_spaces" / "cifar.yaml").read_text())["data"]["root"]
    assert f"python -m tuner data fetch cifar10 --root {root}" in config["setup_commands"]


def test_nodes_run_this_ray(config):
    pins = [m for c in config["setup_commands"] for m in re.findall(r"ray\[[^\]]*\]==([\w.]+)", c)]
    assert pins == [ray.__version__]


SECRETS = [
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"(?i)aws_secret_access_key|aws_session_token",
    r"(?i)\b(password|passwd|token|secret|api_?key)\s*[:=]",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"://[^/\s:@]+:[^/\s@]+@",  # credentials inside a URL
]


@pytest.mark.parametrize("pattern", SECRETS)
def test_no_secret_is_written_in_the_file(pattern):
    text = CLUSTER_YAML.read_text()  # comments included: they get committed too
    assert not re.search(pattern, text), f"cluster.yaml matches {pattern}"


def test_the_mlflow_uri_comes_from_the_environment(config):
    text = CLUSTER_YAML.read_text()
    assert "$MLFLOW_TRACKING_URI" in text, "cluster.yaml should say where the MLflow URI comes from"
    # Only ever read ($MLFLOW_TRACKING_URI, ${MLFLOW_TRACKING_URI}), never assigned or hard-wired.
    bare = re.findall(r"(?<!\$)(?<!\$\{)MLFLOW_TRACKING_URI.{0,20}", text)
    assert not bare, bare
    # No tracking store wired into what the nodes run or are configured with.
    values = _strings(_load())
    assert not [v for v in values if re.search(r"://|sqlite:|databricks", v)]
