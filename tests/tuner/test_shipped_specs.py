"""Every shipped search space smoke-runs end to end on small real data in its real file format."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tuner.commands.cli import main
from tuner.tracking.tags import PARENT_ROLE, TRIAL_ROLE, Status, Tag

ROOT = Path(__file__).resolve().parents[2]
SMALL_RUN = ["--num-samples", "2", "--max-epochs", "1"]  # the grace period is lowered to fit


@pytest.fixture
def mnist_root(tmp_path, fashion, write_idx):
    x, y = fashion
    return write_idx(tmp_path / "mnist", (x[:800], y[:800]), (x[800:], y[800:]), compress=True)


@pytest.fixture
def cifar_root(tmp_path, cifar_images, write_cifar):
    x, y = cifar_images
    return write_cifar(tmp_path / "cifar-10-batches-py", x, y, test_size=100)


@pytest.fixture
def cats_dogs_root(tmp_path, fashion, write_image_tree):
    x, y = fashion
    write_image_tree(tmp_path / "cats_dogs", x[:400], y[:400], classes=2)
    return tmp_path / "cats_dogs"


@pytest.fixture
def scene_root(tmp_path, fashion, write_image_tree):
    x, y = fashion
    write_image_tree(tmp_path / "scenes", x[:600], y[:600], classes=3)
    return tmp_path / "scenes"


CASES = {
    "fashion_mnist.yaml": (
        "fashion_mnist_root",
        ["--set", "data.max_train=512", "--set", "data.max_test=200"],
    ),
    "mnist.yaml": ("mnist_root", ["--set", "data.max_train=128"]),
    "cifar.yaml": ("cifar_root", ["--set", "data.max_train=128"]),
    "cifar_pareto.yaml": ("cifar_root", ["--set", "data.max_train=128"]),
    "cats_dogs.yaml": ("cats_dogs_root", ["--set", "data.options.image_size=32"]),
    "scene_knn.yaml": ("scene_root", ["--set", "data.options.image_size=32"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("spec_name", sorted(CASES))
def test_shipped_spec_runs_on_small_real_data(ray_session, tmp_path, request, spec_name):
    root_fixture, extra = CASES[spec_name]
    args = ["run", str(ROOT / "search_spaces" / spec_name), *SMALL_RUN, *extra]
    if root_fixture:
        args += ["--set", f"data.root={request.getfixturevalue(root_fixture)}"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args += [
        "--set",
        f"cache_dir={tmp_path / 'cache'}",
        "--tracking-uri",
        uri,
        "--storage",
        str(tmp_path / "ray"),
    ]
    assert main(args) == 0

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(Path(spec_name).stem)  # the specs name themselves so
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get(Tag.ROLE) == PARENT_ROLE]
    trials = [r for r in runs if r.data.tags.get(Tag.ROLE) == TRIAL_ROLE]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert 0.0 <= parents[0].data.metrics["test_acc"] <= 1.0
    assert len(trials) == 2
    assert all(t.data.tags[Tag.STATUS] in {Status.COMPLETED, Status.EARLY_STOPPED} for t in trials)
