"""The user's own model, dataset and training function named by import path, at load time and
outside Ray: the registries resolve them with the zoo's checks, a bad one is one line and exit 2
before Ray or MLflow start, and a training function runs as the closing phase runs it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import ray
import torch

import data
import models
import tuner
from models.options import CODE_PATH, use_code_path
from tests.tuner.own_package import PACKAGE, write_package
from tuner.commands.cli import main
from tuner.spec.document import load_spec
from tuner.trainables import Settings, function, trainable_module
from tuner.trainables.trial_report import TrialReport

SPEC = f"""\
name: own_scans
trainable: "{PACKAGE}.train:fit"
data: {{dataset: "{PACKAGE}.data:load_scans", options: {{count: 120}}, seed: 0}}
search: {{algorithm: random, num_samples: 1}}
scheduler: {{type: fifo, max_epochs: 2}}
space:
  lr: {{loguniform: [1e-3, 1e-2]}}
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's package in a folder of its own, importable (as a spec beside it makes it)."""
    folder = tmp_path_factory.mktemp("own_code")
    write_package(folder)
    use_code_path([str(folder)])
    return folder


def test_registries_resolve_import_paths_with_the_zoos_checks(package):
    net = models.build(f"{PACKAGE}.nets:wide_net", num_classes=3, in_channels=1, image_size=8)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 3)  # image_size: not declared, not passed
    tiny = models.build(
        f"{PACKAGE}.nets:TinyNet", num_classes=4, in_channels=1, image_size=8, width=5
    )
    assert tiny.head.out_features == 4 and tiny.head.in_features == 5  # a class, by its options
    assert models.model_options(f"{PACKAGE}.nets:wide_net") == {
        "width": 32,
        "pretrained_file": None,
    }
    with pytest.raises(models.ModelError, match=r"width='wide' is not allowed; must be an integer"):
        models.MODELS.check(f"{PACKAGE}.nets:wide_net", {"width": "wide"})
    assert f"{PACKAGE}.nets:nothing" not in models.MODELS
    assert "has no 'nothing'; it has: TinyNet, wide_net" in models.MODELS.unknown(
        f"{PACKAGE}.nets:nothing"
    )
    splits = data.load(f"{PACKAGE}.data:load_scans", count=60, classes=2, seed=0)
    assert splits.classes == ("0", "1") and len(splits.train_y) + len(splits.val_y) == 48
    assert str(package) in CODE_PATH


DEEP = ("trainable=deep", "space={}")  # the zoo's trainable checks a model section


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            (*DEEP, f"space.model={{name: {PACKAGE}.nets:wide_net, depth: 3}}"),
            "space.model.depth: unknown key (did you mean `width`?); allowed: width, pretrained",
        ),
        (
            (*DEEP, f"space.model={{name: {PACKAGE}.nets:TinyNet, width: 1.5}}"),
            "space.model.width: must be an integer, got 1.5",
        ),
        (
            (*DEEP, f"space.model={{choice: {{lenet5: {{}}, {PACKAGE}.nets:TinyNet: {{x: 1}}}}}}"),
            f"space.model.choice.{PACKAGE}.nets:TinyNet.x: unknown key",
        ),
        ((*DEEP, "space.model.name=no_such_pkg.nets:net"), "no module 'no_such_pkg' to import"),
        (  # + its file, and "has no 'load_scan'; it has: ..., load_scans"
            (f"data.dataset={PACKAGE}.data:load_scan",),
            f"data.dataset: {PACKAGE}.data (",
        ),
        (("data.options.count=many",), "data.options: option count='many' is not allowed"),
        (("data.dataset=no_such_pkg.data:load",), "no module 'no_such_pkg' to import"),
        ((f"trainable={PACKAGE}.nets:wide_net",), "a training function takes (config, data)"),
        ((f"trainable={PACKAGE}.data:load_scans",), "has no test(config, checkpoint, data)"),
        (("trainable=no_such_pkg.train:fit",), "trainable: no module 'no_such_pkg'"),
        (("trainable=fit",), "must be 'deep' or 'classical', or your own training function"),
        (("metric=train_loss",), "metric: the search selects on a validation metric"),
    ],
)
def test_bad_own_code_is_one_line_and_exit_2_before_anything_starts(
    package, tmp_path, monkeypatch, capsys, overrides, expected
):
    spec = package / "own_scans.yaml"
    spec.write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    ray_before = ray.is_initialized()  # a session's shared Ray may be up already
    flags = [flag for override in overrides for flag in ("--set", override)]
    assert main(["run", str(spec), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tuner: error: --set {overrides[-1]}: ") and expected in err, err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no Tune folder
    assert ray.is_initialized() == ray_before  # Ray not started


def test_a_spec_naming_own_code_records_where_it_is_imported_from(package, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec_file = package / "own_scans.yaml"
    spec_file.write_text(SPEC)
    spec = load_spec(spec_file)
    assert spec.code_path == (str(package), str(tmp_path))  # the spec's folder, then the cwd
    assert load_spec(spec_file, code_path=["/elsewhere"]).code_path == ("/elsewhere",)
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\n")
    assert load_spec(plain).code_path == ()  # no own code: nothing put on sys.path


def settings(max_epochs: int = 2) -> Settings:
    return Settings(max_epochs=max_epochs, seed=0, metric="val_acc", mode="max")


def test_the_closing_phase_trains_and_tests_a_function_outside_tune(package, monkeypatch):
    # The closing phase runs these as Ray tasks, which have CPUs assigned; here, the driver.
    monkeypatch.setattr(function, "use_assigned_cpus", lambda: None)
    trainable = trainable_module(f"{PACKAGE}.train:fit", code_path=[str(package)])
    splits = data.load(f"{PACKAGE}.data:load_scans", count=300, seed=0)
    config = {"lr": 0.05, "width": 16}
    assert trainable.epochs(config, max_epochs=3) == 3
    validated = trainable.validate(config, splits=splits, settings=settings())
    assert 0.5 < validated.value <= 1  # three classes, easy ones
    assert validated.model["epoch"] == 2  # the last state fit reported, as checkpoint() gives it
    tested = trainable.test_validated(config, validated, splits=splits, settings=settings())
    assert tested.metrics["test_acc"] > 0.5
    assert isinstance(tested.model, torch.nn.Module)  # what the search registers
    retrained = trainable.retrain_and_test(config, splits=splits, settings=settings(1))
    assert len(retrained.y_pred) == len(splits.test_y)


def test_report_and_checkpoint_do_nothing_outside_a_search():
    assert tuner.report({"val_acc": 0.5}, checkpoint={"epoch": 1}) is None
    assert tuner.checkpoint() is None


def test_a_functions_own_val_and_train_metrics_are_kept_per_epoch():
    result = {**TrialReport({"val_margin": 0.4, "val_acc": 0.9}, epochs=2).result()}
    result |= {"time_this_iter_s": 1.5, "training_iteration": 1}  # Tune's own: no metrics
    assert TrialReport.read(result).metrics == {"val_acc": 0.9, "val_margin": 0.4}
    assert math.isclose(TrialReport.read(result).metrics["val_margin"], 0.4)
