"""Fine-tuning in the deep trainable: pretrained weights in a trial (``model.pretrained_file``, a
timm model's), ``finetune``'s frozen blocks and learning rates, their checks at load, a search's
weights saved for another (``tuner best --weights``), and a timm model searched end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import data
from models import build
from tests.helpers import new_store, refused_at_load, tuner_run
from tuner.commands.cli import main
from tuner.publishing.export import load_registered
from tuner.tracking.records import latest_parent
from tuner.trainables import Settings
from tuner.trainables.deep import TrainingRun, build_model, build_optimizer

DEEP = "name: d\ndata: {dataset: digits}\nspace:\n"
CNN = {"name": "simple_cnn", "width": 16, "depth": 2}


@pytest.fixture(scope="module")
def digits_splits() -> data.Splits:
    return data.load("digits", max_train=200, seed=0)


def settings() -> Settings:
    return Settings(max_epochs=1, seed=0, metric="val_acc", mode="max")


@pytest.fixture
def backbone(tmp_path: Path, digits_splits: data.Splits) -> tuple[Path, dict]:
    """A simple_cnn's weights for 3 classes (another task's head) in a safetensors file."""
    source = build("simple_cnn", num_classes=3, in_channels=1, image_size=8, width=16, depth=2)
    path = tmp_path / "backbone.safetensors"
    save_file(source.state_dict(), str(path))
    return path, source.state_dict()


def test_a_trial_starts_from_the_pretrained_weights_with_a_new_head(
    backbone: tuple[Path, dict], digits_splits: data.Splits
) -> None:
    path, pretrained = backbone
    config = {"model": {**CNN, "pretrained_file": str(path)}}
    trial = TrainingRun(config, digits_splits, settings())
    for name, tensor in trial.model.state_dict().items():
        if name.startswith("fc."):
            continue
        assert torch.equal(tensor, pretrained[name]), name  # the pretrained ones, all loaded
    assert trial.model.fc.out_features == 10  # the head replaced for the digits' classes
    # The dataset's own statistics normalise a zoo model's input, as without a file.
    assert trial.mean.shape == (1,)


def test_freeze_leaves_the_first_blocks_untrained(
    backbone: tuple[Path, dict], digits_splits: data.Splits
) -> None:
    path, pretrained = backbone
    config = {"model": {**CNN, "pretrained_file": str(path)}, "finetune": {"freeze": 1}}
    trial = TrainingRun(config, digits_splits, settings())
    frozen = {name for name, p in trial.model.named_parameters() if not p.requires_grad}
    assert frozen == {"features.0.0.weight", "features.0.1.weight", "features.0.1.bias"}
    trial.train_epoch()
    weights = trial.model.state_dict()
    assert torch.equal(weights["features.0.0.weight"], pretrained["features.0.0.weight"])
    assert not torch.equal(weights["features.2.0.weight"], pretrained["features.2.0.weight"])
    backbone_only = build_model({"model": CNN, "finetune": {"freeze": "backbone"}}, digits_splits)
    trained = {name for name, p in backbone_only.named_parameters() if p.requires_grad}
    assert trained == {"fc.weight", "fc.bias"}


def test_head_lr_scale_and_layer_decay_make_one_group_per_rate(
    digits_splits: data.Splits,
) -> None:
    config = {
        "model": CNN,
        "optimizer": {"name": "sgd", "lr": 0.1},
        "finetune": {"head_lr_scale": 10.0, "layer_decay": 0.5},
    }
    model = build_model(config, digits_splits)
    groups = build_optimizer(config, model, batch_size=64).param_groups
    # The block before the head at the base rate, the stem at half of it, the head at 10x.
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.05, 1.0])
    assert groups[2]["params"] == [model.fc.weight, model.fc.bias]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # With the bias group: the weights' groups, then the biases', each at its block's rate.
    config["optimizer"] = {"name": "sgd", "lr": 0.1, "bias_lr_scale": 2.0, "weight_decay": 0.01}
    groups = build_optimizer(config, model, batch_size=64).param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.05, 1.0, 0.2, 0.1, 2.0])
    assert [g["weight_decay"] for g in groups] == pytest.approx([0.01] * 3 + [0.005] * 3)
    # Frozen blocks are in no group.
    config["finetune"] = {"freeze": 1, "head_lr_scale": 10.0}
    model = build_model(config, digits_splits)
    optimizer = build_optimizer(config, model, batch_size=64)
    grouped = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            DEEP + "  model: {name: timm/convnext_atoo}\n",
            "space.model.name: unknown timm model 'timm/convnext_atoo'; closest: "
            "timm/convnext_atto, ",
        ),
        (
            DEEP + "  model: {name: timm/resnet10t, pretrained: 'yes'}\n",
            "space.model.pretrained: must be true or false, got 'yes'",
        ),
        (
            DEEP + "  model: {name: timm/resnet10t, stem: small}\n",
            "space.model.stem: unknown key; allowed: pretrained, pretrained_file, drop_rate, "
            "drop_path_rate, input_size",
        ),
        (
            DEEP + "  model: {name: simple_cnn, pretrained_file: {choice: [a.pt, 3]}}\n",
            "space.model.pretrained_file.choice[1]: must be a string or null, got 3",
        ),
        (
            DEEP + "  finetune: {freeze: -1}\n",
            "space.finetune.freeze: must be an integer >= 0 or one of 'backbone', got -1",
        ),
        (
            DEEP + "  finetune: {head_lr_scale: {uniform: [0, 10]}}\n",
            "space.finetune.head_lr_scale.uniform: must be a number > 0, got 0",
        ),
        (
            DEEP + "  finetune: {head_lr: 2}\n",
            "space.finetune.head_lr: unknown key (did you mean `head_lr_scale`?)",
        ),
    ],
)
def test_a_bad_value_fails_at_load_with_one_line_and_exit_2(
    tmp_path, capsys, monkeypatch, text, expected
):
    pytest.importorskip("timm")
    monkeypatch.chdir(tmp_path)
    err = refused_at_load(tmp_path, capsys, text)
    assert f"{tmp_path / 'spec.yaml'}: {expected}" in err


def test_a_searchs_weights_start_another_search(digits_search, tmp_path: Path) -> None:
    """`tuner best NAME --weights FILE`: the registered best network's tensors, which a model's
    pretrained_file then loads (all but the head)."""
    path = tmp_path / "best.safetensors"
    argv = ["best", "digits_search", "--weights", str(path), "--tracking-uri", digits_search.uri]
    assert main(argv) == 0
    saved = load_file(str(path))
    assert "fc.weight" in saved and not any(n.startswith("network.") for n in saved)
    assert "mean" not in saved  # the served model's normalisation is not the network's
    depth = 1 + max(int(name.split(".")[1]) for name in saved if name.startswith("features.")) // 2
    width = saved["features.0.0.weight"].shape[0]
    model = build(
        "simple_cnn",
        num_classes=4,
        in_channels=1,
        image_size=8,
        width=width,
        depth=depth,
        pretrained_file=str(path),
    )
    for name, tensor in model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, saved[name]), name


def test_a_timm_model_searched_end_to_end(ray_session, tmp_path_factory) -> None:
    """A timm model from a local weights file through real Ray, Optuna and MLflow: trained,
    tested, registered, and served on the dataset's own 8x8 images."""
    timm = pytest.importorskip("timm")
    store = new_store(tmp_path_factory, "timm_search")
    weights = store.tmp / "resnet10t.safetensors"
    save_file(timm.create_model("resnet10t").state_dict(), str(weights))
    spec = f"""\
name: timm_search
data: {{dataset: digits, max_train: 150, max_test: 40, seed: 0}}
search: {{algorithm: random, num_samples: 1, max_concurrent: 1, seed: 0}}
scheduler: {{type: fifo, max_epochs: 1}}
final: {{repeats: 1}}
resources: {{cpu: 1}}
space:
  model: {{name: timm/resnet10t, pretrained_file: {weights}, input_size: 32}}
  finetune: {{freeze: 2, head_lr_scale: 10.0}}
  optimizer: {{name: adamw, lr: 1e-3}}
  batch_size: 32
"""
    tuner_run(store, spec)
    parent = latest_parent(store.client, "timm_search")
    assert 0.0 <= parent.data.metrics["test_acc"] <= 1.0

    served = load_registered(store.uri, "timm_search")
    images = data.load("digits", seed=0).test_x[:3].numpy()
    answer = served.predict(images.astype(np.uint8))
    assert len(answer) == 3 and set(answer["label"]) <= {str(d) for d in range(10)}


def test_fashion_mnist_keeps_the_classes_asked_for(fashion_mnist_root: Path) -> None:
    """Two disjoint tasks from one dataset: classes 5-9, relabelled 0-4, train and test."""
    splits = data.load("fashion_mnist", classes=[5, 6, 7, 8, 9], max_train=1000, seed=0)
    assert splits.classes == ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert splits.sizes == "train=800 val=200 test=5000"
    assert splits.train_y.bincount().tolist() == [160] * 5
    with pytest.raises(data.DatasetError, match="must name each label at most once"):
        data.load("fashion_mnist", classes=[5, 5])
