"""search_spaces/cifar_fast.yaml, the shipped fast-recipe search, end to end on CPU on a tiny
CIFAR-format folder: it runs, and every trial records the recipe's options."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.tuner.test_shipped_specs import ROOT, SMALL_RUN
from tuner.commands.cli import main
from tuner.tracking.tags import PARENT_ROLE, TRIAL_ROLE, Status, Tag


@pytest.mark.slow
def test_cifar_fast_runs_and_records_the_recipe_per_trial(
    ray_session, tmp_path, cifar_images, write_cifar
):
    cifar_root = write_cifar(tmp_path / "cifar-10-batches-py", *cifar_images, test_size=100)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", str(ROOT / "search_spaces" / "cifar_fast.yaml"), *SMALL_RUN]
    for override in (
        "resources.gpu=0",
        "data.max_train=128",
        f"data.root={cifar_root}",
        "space.model.widths=[16, 32, 32]",  # airbench's layout, small enough for a CPU
    ):
        args += ["--set", override]
    args += ["--tracking-uri", uri, "--storage", str(tmp_path / "ray")]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)  # MLflow keeps artifacts in ./mlruns
        assert main(args) == 0

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("cifar_fast").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(Tag.ROLE) == PARENT_ROLE]
    trials = [r for r in runs if r.data.tags.get(Tag.ROLE) == TRIAL_ROLE]
    assert parent.info.status == "FINISHED" and 0.0 <= parent.data.metrics["test_acc"] <= 1.0
    assert len(trials) == 2
    for trial in trials:
        params = trial.data.params
        assert trial.data.tags[Tag.STATUS] == Status.COMPLETED
        assert params["augment.hflip"] == "alternate" and params["data_init"] == "5000"
        assert params["optimizer.bias_lr_scale"] == "64"
        assert params["optimizer.lr_per_examples"] == "1024"
        assert float(params["ema.decay"]) in {0.0, 0.8, 0.9} and params["tta.flip"] == "True"
        assert params["tta.translate"] in {"0", "1"} and params["compile"] == "False"
