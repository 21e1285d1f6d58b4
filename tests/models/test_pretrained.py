"""Starting from trained weights: the zoo's ``pretrained_file``, timm's models by name, and the
blocks fine-tuning counts (models.pretrained, models.timm_models)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import models
from models import ModelError, build
from models.pretrained import WeightsError, blocks, head_names, load_matching, read_weights
from models.registry import MODELS, is_timm
from models.timm_models import input_stats

ZOO = sorted(name for name in MODELS if not is_timm(name))
SMALL = {"num_classes": 5, "in_channels": 1, "image_size": 28}
TIMM_NAME = "timm/resnet10t"  # 4.9M parameters: among timm's smallest CNNs


def zoo_model(name: str, **options: object) -> torch.nn.Module:
    size = 64 if name in ("resnet50", "inception") else 32  # what each builds for cheaply
    return build(name, num_classes=7, in_channels=3, image_size=size, **options)


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_has_a_head_of_its_classes_and_blocks(name: str) -> None:
    model = zoo_model(name)
    (head,) = head_names(model)
    assert model.get_submodule(head).weight.shape[0] == 7  # the last module classifies
    parts = blocks(model)
    assert len(parts) >= 2  # a body, then the head
    assert all(name.startswith(f"{head}.") for name, _ in parts[-1])
    names = [name for block in parts for name, _ in block]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each once


def test_zoo_pretrained_file_loads_matching_tensors_except_the_head(tmp_path: Path) -> None:
    source = build("simple_cnn", num_classes=10, in_channels=1, image_size=28, depth=3)
    path = tmp_path / "backbone.safetensors"
    save_file(source.state_dict(), str(path))
    model = build("simple_cnn", **SMALL, depth=3, pretrained_file=str(path))
    for name, tensor in model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, source.state_dict()[name]), name
    assert model.fc.out_features == 5
    # Same shape, still not loaded: the head of the new task starts fresh.
    same_shape = build("simple_cnn", num_classes=10, in_channels=1, image_size=28, depth=3)
    loaded = load_matching(same_shape, path)
    assert not torch.equal(same_shape.fc.weight, source.fc.weight)
    assert loaded == len(source.state_dict()) - 2  # all but fc.weight and fc.bias


def test_zoo_pretrained_file_loads_a_trial_checkpoint(tmp_path: Path) -> None:
    source = build("simple_cnn", **SMALL)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)  # a tuner trial's checkpoint
    model = build("simple_cnn", **SMALL, pretrained_file=str(path))
    assert torch.equal(model.features[0][0].weight, source.features[0][0].weight)


def test_deeper_net_takes_the_layers_that_match(tmp_path: Path) -> None:
    path = tmp_path / "shallow.safetensors"
    save_file(build("simple_cnn", **SMALL, depth=2).state_dict(), str(path))
    model = build("simple_cnn", **SMALL, depth=3)
    # features.0 and features.2 match by name and shape; features.4 is new.
    assert load_matching(model, path) == 12  # 2 blocks x (conv weight + BN's five tensors)


def test_a_file_matching_nothing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lenet.safetensors"
    save_file(build("lenet5", **SMALL).state_dict(), str(path))
    with pytest.raises(ModelError, match=r"^pretrained_file=.*has no weights of this model's"):
        build("simple_cnn", **SMALL, pretrained_file=str(path))


def test_a_weights_file_never_runs_code(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole module: unpickling would run its class
    with pytest.raises(ModelError, match=r"^pretrained_file=.*is not a weights file"):
        build("simple_cnn", **SMALL, pretrained_file=str(path))
    with pytest.raises(ModelError, match=r"^pretrained_file=.*is not a file"):
        build("simple_cnn", **SMALL, pretrained_file=str(tmp_path / "missing.safetensors"))


def test_read_weights_refuses_what_is_no_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "numbers.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="holds no state dict of tensors"):
        read_weights(path)


def test_pretrained_file_is_an_option_of_every_zoo_model() -> None:
    for name in ZOO:
        assert models.model_options(name)["pretrained_file"] is None
    with pytest.raises(ModelError, match=r"pretrained_file=3 is not allowed; must be a string"):
        build("simple_cnn", **SMALL, pretrained_file=3)


# ---------------------------------------------------------------------------------------------
# timm
# ---------------------------------------------------------------------------------------------

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A timm model's random weights (ImageNet's 1000 classes, 3 channels) in a local file:
    what timm's hub would give, without a network."""
    source = timm.create_model(TIMM_NAME.removeprefix("timm/"))
    path = tmp_path_factory.mktemp("weights") / "resnet10t.safetensors"
    save_file(source.state_dict(), str(path))
    return path, source.state_dict()


def test_timm_model_from_a_local_weights_file(timm_weights: tuple[Path, dict]) -> None:
    path, source = timm_weights
    model = build(TIMM_NAME, num_classes=5, in_channels=3, image_size=32, pretrained_file=str(path))
    for name, tensor in model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, source[name]), name
    assert model.fc.out_features == 5  # the head replaced for the dataset's classes
    assert not torch.equal(model.fc.weight, source["fc.weight"][:5])
    mean, std = input_stats(model)
    assert mean.tolist() == pytest.approx(model.pretrained_cfg["mean"])
    assert std.tolist() == pytest.approx(model.pretrained_cfg["std"])
    # Images of 32 pixels are resized inside the network to the pretrained input size (176).
    seen = []
    model.layer1.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    assert seen == [176 // 4]  # after the stride-2 stem and the max-pool


def test_timm_grey_images_get_the_stem_adapted(timm_weights: tuple[Path, dict]) -> None:
    path, source = timm_weights
    model = build(
        TIMM_NAME,
        num_classes=5,
        in_channels=1,
        image_size=28,
        pretrained_file=str(path),
        input_size=32,
    )
    stem = source["conv1.0.weight"].sum(1, keepdim=True)  # timm sums RGB into one channel
    assert torch.allclose(model.conv1[0].weight, stem)
    mean, _ = input_stats(model)
    assert mean.shape == (1,)
    assert model.eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 5)


def test_timm_blocks_are_stem_stages_and_head() -> None:
    model = build(TIMM_NAME, num_classes=5, in_channels=3, image_size=32)
    names = [[name.split(".")[0] for name, _ in block] for block in blocks(model)]
    assert [sorted(set(block)) for block in names] == [
        ["bn1", "conv1"],
        ["layer1"],
        ["layer2"],
        ["layer3"],
        ["layer4"],
        ["fc"],
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pretrained": "yes"}, r"option pretrained='yes' is not allowed; must be true or false"),
        ({"drop_rate": 1.5}, r"option drop_rate=1.5 is not allowed"),
        ({"stem": "small"}, r"unknown option 'stem' for model 'timm/resnet10t'; allowed: pretr"),
        ({"pretrained_file": "/no/such.safetensors"}, r"is not a file"),
    ],
)
def test_timm_bad_options_are_one_line(options: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message) as raised:
        build(TIMM_NAME, num_classes=5, in_channels=3, image_size=32, **options)
    assert "\n" not in str(raised.value)


def test_unknown_timm_name_lists_close_matches() -> None:
    assert "timm/convnext_atto" in MODELS
    assert "timm/convnext_atoo" not in MODELS
    with pytest.raises(
        ModelError,
        match=r"unknown timm model 'timm/convnext_atoo'; closest: "
        r"timm/convnext_atto,",
    ):
        build("timm/convnext_atoo", num_classes=5, in_channels=3, image_size=32)


@pytest.mark.slow
def test_without_timm_a_timm_name_says_how_to_install() -> None:
    code = (
        "import sys; sys.modules['timm'] = None\n"  # as if not installed
        "import models\n"
        "try:\n"
        "    models.build('timm/resnet10t', num_classes=2, in_channels=3, image_size=32)\n"
        "except models.ModelError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "timm is not installed: pip install -e '.[timm]'" in result.stdout, result.stderr
