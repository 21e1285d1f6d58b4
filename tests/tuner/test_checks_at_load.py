"""A bad value fails when the spec is loaded, not in every trial: one line naming its key path,
exit code 2, before Ray or MLflow start. Names and allowed values come from the code that reads
them (signatures, dataclass fields, ``Literal`` types), so these tests need no list of them."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pytest
import torch

import models
from data.augment import Augmentation
from models.classical import CLASSIFIERS, FEATURES
from models.options import admits, option_types
from tests.helpers import refused_at_load
from tuner.spec.document import load_spec
from tuner.trainables import deep
from tuner.trainables.recipe import Ema, Tta

DEEP = "name: d\ndata: {dataset: digits}\nspace:\n"
CLASSICAL = "name: c\ntrainable: classical\nscheduler: {type: fifo}\nspace:\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            CLASSICAL + "  classifier: {choice: {knn: {metric: manhatan}, linear_svm: {}}}\n",
            "space.classifier.choice.knn.metric: must be one of 'euclidean', 'cityblock', "
            "'cosine', 'chebyshev', 'minkowski', got 'manhatan'",
        ),
        (
            CLASSICAL + "  classifier: {name: knn, k: 0}\n",
            "space.classifier.k: must be an integer >= 1, got 0",
        ),
        (
            CLASSICAL + "  classifier: {name: knn, p: {choice: [1, -1]}}\n",
            "space.classifier.p.choice[1]: knn p must be a positive Minkowski power, got -1",
        ),
        (  # the consumer's own checks, run once at load: the dataclass built with the value
            DEEP + "  augment: {erasing: 1.5}\n",
            "space.augment.erasing: erasing and hflip_p are probabilities: between 0 and 1",
        ),
        (
            DEEP + "  schedule: {name: step, step_size: {choice: [5, 0]}}\n",
            "space.schedule.step_size.choice[1]: step_size and gamma must be > 0, got 0, 0.1",
        ),
        (
            DEEP + "  label_smoothing: {uniform: [0.0, 1.5]}\n",
            "space.label_smoothing.uniform: must be a number in [0, 1], got 1.5",
        ),
        (
            DEEP + "  batch_size: 0\n",
            "space.batch_size: must be an integer >= 1, got 0",
        ),
        (  # ranges: the Range in a factory's annotation, read at load
            DEEP + "  model: {name: simple_cnn, dropout: 1.5}\n",
            "space.model.dropout: must be a number in [0, 1), got 1.5",
        ),
        (
            DEEP + "  model: {name: simple_cnn, width: {int: [0, 4]}}\n",
            "space.model.width.int: must be an integer >= 1, got 0",
        ),
        (
            DEEP + "  model: {name: airbench, widths: [64, 0]}\n",
            "space.model.widths: must be a list (each item an integer >= 1), got [64, 0]",
        ),
        (
            DEEP + "  model: {name: airbench, batchnorm_momentum: 0}\n",
            "space.model.batchnorm_momentum: must be a number in (0, 1], got 0",
        ),
        (
            CLASSICAL + "  features: {name: tiny_image, norm: l3}\n",
            "space.features.norm: must be one of 'none', 'l1', 'l2', 'zscore', got 'l3'",
        ),
        (
            DEEP + "  model: {name: resnet18, stem: bogus}\n",
            "space.model.stem: must be one of 'auto', 'small', 'imagenet', got 'bogus'",
        ),
        (
            DEEP + "  augment: {crop_padding: 2, padding_mode: wrap}\n",
            "space.augment.padding_mode: must be one of 'zeros', 'reflect', got 'wrap'",
        ),
        (
            DEEP + "  model: {name: simple_cnn, depth: {integer: [1, 3]}}\n",
            "space.model.depth: must be an integer >= 1, not a mapping; to sample it use one of "
            "loguniform, uniform, int, choice (did you mean `int` for `integer`?)",
        ),
        (
            DEEP + "  batch_size: {choise: [32, 64]}\n",
            "space.batch_size: must be an integer >= 1, not a mapping; to sample it use one of "
            "loguniform, uniform, int, choice (did you mean `choice` for `choise`?)",
        ),
        (
            DEEP + "  model: {choice: {resnet18: {stem: {choice: [small, tiny]}}, mynet: {}}}\n",
            "space.model.choice.resnet18.stem.choice[1]: must be one of 'auto', 'small', "
            "'imagenet', got 'tiny'",
        ),
        (
            DEEP + "  model: {name: simple_cnn, depth: {uniform: [1, 3]}}\n",
            "space.model.depth.uniform: must be an integer >= 1, got 1.0",
        ),
        (
            DEEP + "  optimizer: {choice: {sgd: {lr: 0.1, nesterv: true}, adam: {}}}\n",
            "space.optimizer.choice.sgd.nesterv: unknown key (did you mean `nesterov`?)",
        ),
        (
            DEEP + "  optimizer: {name: adam, momentum: 0.9}\n",
            "space.optimizer.momentum: unknown key; allowed: lr, betas, eps, weight_decay",
        ),
        (
            DEEP + "  optimizer: {name: adam, betas: [0.9]}\n",
            "space.optimizer.betas: must be a list of 2 (a number, a number), got [0.9]",
        ),
        (
            DEEP + "  schedule: {name: cosine, gamma: 0.5}\n",
            "space.schedule.gamma: unknown key; allowed: warmup_epochs",
        ),
        (
            DEEP + "  model: {name: custom_resnet, blocks: {choice: [[1, 1], [2, x]]}}\n",
            "space.model.blocks.choice[1]: must be a list (each item an integer >= 1), "
            "got [2, 'x']",
        ),
        (
            DEEP + "  augment: {hflip: 1}\n",
            "space.augment.hflip: must be one of false, true, 'alternate', got 1",
        ),
        (DEEP + "  compile: maybe\n", "space.compile: must be true or false, got 'maybe'"),
        (DEEP + "  model: simple_cnn\n", "space.model: must be a mapping, got 'simple_cnn'"),
        (
            DEEP + "  model: {name: resnet18, pretrained: 3}\n",
            "space.model.pretrained: must be a string or null, got 3",
        ),
    ],
)
def test_a_bad_value_fails_at_load_with_one_line_and_exit_2(
    tmp_path, capsys, monkeypatch, text, expected
):
    monkeypatch.chdir(tmp_path)
    err = refused_at_load(tmp_path, capsys, text)
    assert f"{tmp_path / 'spec.yaml'}: {expected}" in err


def test_what_a_section_accepts_is_read_from_its_consumer(tmp_path):
    adam = deep.optimizer_options("adam")
    # torch's own arguments, the bias group's, and SGD's alone the linear scaling rule's.
    assert {"betas", "eps", "bias_lr_scale"} <= set(adam) and "momentum" not in adam
    assert "lr_per_examples" in deep.optimizer_options("sgd") and "lr_per_examples" not in adam
    assert not set(adam) & set(deep.TORCH_ONLY)
    spec = tmp_path / "ok.yaml"
    spec.write_text(DEEP + "  optimizer: {name: adam, betas: [0.9, 0.99], amsgrad: true}\n")
    assert load_spec(spec).space["optimizer"]["betas"] == [0.9, 0.99]


@pytest.mark.parametrize("name", sorted(deep.OPTIMIZERS))
def test_every_option_an_optimizer_accepts_builds_it_and_steps(name):
    """What the check lets through, build_optimizer takes: each option at torch's default."""
    defaults = inspect.signature(deep.OPTIMIZERS[name]).parameters
    section = {
        option: defaults[option].default
        for option in deep.optimizer_options(name)
        if option in defaults
    }
    section |= {"bias_lr_scale": 2.0, "bias_weight_decay": False}
    section |= {"lr_per_examples": 1024} if name == "sgd" else {}
    section |= {"betas": [0.9, 0.99]} if "betas" in section else {}  # a YAML list, not a tuple
    assert set(section) == set(deep.optimizer_options(name))
    model = torch.nn.Linear(3, 2)
    optimizer = deep.build_optimizer({"optimizer": {"name": name, **section}}, model, 64)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()


def every_section() -> list[tuple[str, dict[str, Any]]]:
    """Every section a spec's space can set, each with its options' types."""
    sections = [(f"model {name}", models.MODELS.option_types(name)) for name in models.MODELS]
    sections += [(f"optimizer {name}", deep.optimizer_options(name)) for name in deep.OPTIMIZERS]
    sections += [(f"schedule {name}", deep.SCHEDULES.option_types(name)) for name in deep.SCHEDULES]
    sections += [(kind.__name__, option_types(kind)) for kind in (Augmentation, Ema, Tta)]
    sections += [(f"features {name}", FEATURES.option_types(name)) for name in FEATURES]
    sections += [(f"classifier {name}", CLASSIFIERS.option_types(name)) for name in CLASSIFIERS]
    return sections


SECTIONS = every_section()


@pytest.mark.parametrize(("section", "types"), SECTIONS, ids=[section for section, _ in SECTIONS])
def test_every_option_has_a_type_so_its_values_are_checked_at_load(section, types):
    untyped = [name for name, kind in types.items() if kind is Any]
    assert not untyped, f"{section}: annotate {untyped} where they are read"


@pytest.mark.parametrize(
    ("expected", "value", "ok"),
    [
        (int, True, False),  # a bool is an int in Python, never in a spec
        (int, 2.0, False),
        (float, 2, True),  # YAML writes 2 for 2.0
        (float, False, False),
        (bool, 1, False),
        (Literal[0, 1], True, False),
        (Literal[False, True, "alternate"], "alternate", True),
        (int | None, None, True),
        (Sequence[int], (1, 2), True),
        (Sequence[int], [1, 2.5], False),
        (tuple[float, float], [0.9, 0.99], True),
        (Mapping[str, Any], "simple_cnn", False),
    ],
)
def test_admits_reads_a_yaml_value_by_its_type(expected, value, ok):
    assert admits(expected, value) is ok
