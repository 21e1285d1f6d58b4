"""Spec validation through the real CLI: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.commands.cli import build_parser, main, run_spec
from tuner.spec.document import load_spec
from tuner.tracking.tags import SearchTags, Tag

ROOT = Path(__file__).resolve().parents[2]
VALID = """\
name: t
data: {dataset: digits}
search: {algorithm: optuna, num_samples: 2}
scheduler: {type: asha, max_epochs: 2, grace_period: 1}
space:
  model: {name: simple_cnn, width: {int: [8, 16]}}
  optimizer:
    choice:
      sgd: {lr: {loguniform: [1e-3, 1e-1]}, momentum: {uniform: [0.5, 0.9]}}
      adam: {lr: 1e-3}
"""


def run_cli(tmp_path: Path, capsys, text: str, *extra: str) -> tuple[int, str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    code = main(["run", str(spec), *extra])
    return code, capsys.readouterr().err


def test_valid_spec_loads_with_numbers_like_1e_minus_3():
    spec_file = ROOT / "search_spaces" / "digits.yaml"
    spec = load_spec(spec_file)
    assert spec.space["optimizer"]["choice"]["sgd"]["lr"]["loguniform"] == [1e-3, 3e-1]
    assert spec.experiment == "digits"


def test_overrides_apply_before_validation(tmp_path):
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(VALID)
    spec = load_spec(spec_file, ["search.num_samples=7", "search.algorithm=random"])
    assert spec.search.num_samples == 7
    assert spec.search.algorithm == "random"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID + "serach: {}\n", "serach: unknown key (did you mean `search`?)"),
        (
            VALID + "constraints: {max_param: 1000}\n",
            "constraints.max_param: unknown key (did you mean `max_params`?)",
        ),
        (
            VALID + "constraints: {max_model_mb: 0}\n",
            "constraints.max_model_mb: Input should be greater than 0",
        ),
        (VALID + "final: {retrain: maybe}\n", "final.retrain: Input should be a valid boolean"),
        (
            VALID.replace("num_samples: 2", "num_samples: many"),
            "search.num_samples: Input should be a valid integer",
        ),
        (
            VALID.replace("max_epochs: 2", "max_epochs: 0"),
            "scheduler.max_epochs: Input should be greater than or equal to 1",
        ),
        (VALID.replace("[8, 16]", "[16, 8]"), "space.model.width.int: needs lo <= hi"),
        (
            VALID.replace("[1e-3, 1e-1]", "[0, 1e-1]"),
            "space.optimizer.choice.sgd.lr: loguniform needs 0 < lo",
        ),
        (
            VALID.replace("{int: [8, 16]}", "{int: []}"),
            "space.model.width.int: must be a list of two integers",
        ),
        (
            VALID.replace("simple_cnn", "resnet9000"),
            "space.model.name: unknown model 'resnet9000'; known models:",
        ),
        (
            VALID.replace("adam: {lr", "adamm: {lr"),
            "space.optimizer.choice.adamm: unknown optimizer 'adamm'; "
            "known optimizers: adadelta, adam",
        ),
        (
            VALID.replace("momentum:", "momentm:"),
            "space.optimizer.choice.sgd.momentm: unknown key (did you mean `momentum`?)",
        ),
        (
            VALID.replace("dataset: digits", "dataset: imagenet"),
            "data.dataset: unknown dataset 'imagenet'; known datasets:",
        ),
        (
            VALID.replace("algorithm: optuna", "algorithm: hyperband"),
            "search.algorithm: must be 'optuna', 'random', 'grid' or 'bohb'",
        ),
        (VALID + "  optimiser: adam\n", "space.optimiser: unknown key (did you mean `optimizer`?)"),
        (
            VALID.replace("grace_period: 1", "grace_period: 3"),
            "scheduler: grace_period (3) must be <= max_epochs (2)",
        ),
        ("name: [unclosed\n", "invalid YAML at line 2"),
        ("- just\n- a list\n", "a spec must be a YAML mapping"),
    ],
)
def test_bad_specs_fail_with_one_line_and_exit_2(tmp_path, capsys, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(tmp_path, capsys, text)
    assert code == 2
    assert err.count("\n") == 1, err
    assert "spec.yaml" in err or "--set" in err
    assert expected in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing written


def test_grid_over_a_continuous_range_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = VALID.replace("algorithm: optuna", "algorithm: grid").replace("{int: [8, 16]}", "16")
    code, err = run_cli(tmp_path, capsys, text)
    assert code == 2
    assert (
        "space.optimizer.choice.sgd.lr: grid search can't enumerate a continuous distribution"
        in err
    )


def test_missing_spec_file_and_bad_flags_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "no such spec file" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert "the following arguments are required: spec" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "x.yaml"), "--set", "novalue"]) == 2


def test_set_override_with_a_bad_value_names_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(tmp_path, capsys, VALID, "--set", "search.num_samples=-3")
    assert code == 2
    assert err.startswith(
        "tuner: error: --set search.num_samples=-3: search.num_samples: Input should be greater "
        "than or equal to 1"
    )
    code, err = run_cli(tmp_path, capsys, VALID, "--set", "space.model.width.int=[8, 4]")
    assert code == 2
    assert err.startswith("tuner: error: --set space.model.width.int=[8, 4]: space.model.width")
    code, err = run_cli(tmp_path, capsys, VALID.replace("max_epochs: 2", "max_epochs: -2"))
    assert code == 2
    assert err.startswith("tuner: error: ") and "spec.yaml: scheduler.max_epochs" in err


LONG_GRACE = VALID.replace("max_epochs: 2, grace_period: 1", "max_epochs: 8, grace_period: 3")


@pytest.mark.parametrize(
    "flags", [["--max-epochs", "1"], ["--set", "scheduler.max_epochs=1"]], ids=["flag", "set"]
)
def test_a_shorter_budget_on_the_command_line_lowers_the_grace_period(tmp_path, capsys, flags):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(LONG_GRACE)
    spec, _ = run_spec(build_parser().parse_args(["run", str(spec_file), *flags]))
    assert (spec.scheduler.max_epochs, spec.scheduler.grace_period) == (1, 1)
    assert capsys.readouterr().err == (
        "tuner: scheduler.grace_period 3 lowered to 1 to fit scheduler.max_epochs=1 "
        "from the command line\n"
    )
    spec, _ = run_spec(build_parser().parse_args(["run", str(spec_file), "--max-epochs", "4"]))
    assert spec.scheduler.grace_period == 3  # it fits: left alone, and nothing printed
    assert capsys.readouterr().err == ""


def test_a_grace_period_set_with_the_budget_on_the_command_line_must_fit(tmp_path, capsys):
    code, err = run_cli(
        tmp_path, capsys, LONG_GRACE, "--max-epochs", "1", "--set", "scheduler.grace_period=2"
    )
    assert code == 2
    assert "scheduler: grace_period (2) must be <= max_epochs (1)" in err


ASHA_FILE = VALID.replace("grace_period: 1", "grace_period: 2, reduction_factor: 3")


def test_fifo_from_the_command_line_drops_the_files_asha_keys_with_a_note(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(ASHA_FILE)
    argv = ["run", str(spec_file), "--set", "scheduler.type=fifo", "--max-epochs", "1"]
    spec, _ = run_spec(build_parser().parse_args(argv))
    assert spec.scheduler.type == "fifo"
    assert not {"grace_period", "reduction_factor"} & spec.scheduler.model_fields_set
    # one line, and no grace period lowered to fit max_epochs 1: it went with asha
    assert capsys.readouterr().err == (
        "tuner: scheduler.grace_period 2, scheduler.reduction_factor 3 of the spec file "
        "dropped: asha's, and --set scheduler.type=fifo\n"
    )


def test_an_asha_key_set_with_fifo_on_the_command_line_is_still_refused(tmp_path, capsys):
    extra = ["--set", "scheduler.type=fifo", "--set", "scheduler.reduction_factor=2"]
    code, err = run_cli(tmp_path, capsys, ASHA_FILE, *extra)
    assert code == 2
    assert err == (
        "tuner: error: --set scheduler.reduction_factor=2: scheduler.reduction_factor: means "
        "nothing to scheduler.type fifo (only asha stops trials early); remove it or use "
        "type: asha\n"
    )


@pytest.mark.parametrize(
    "spec_file", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_spec_validates(spec_file):
    assert load_spec(spec_file).name


def test_secret_looking_overrides_are_masked_for_mlflow():
    search = SearchTags(overrides=("search.num_samples=7", "data.options.api_key=abc", "x.TOKEN=t"))
    recorded = json.loads(search.tags()[Tag.OVERRIDES])
    assert recorded == ["search.num_samples=7", "data.options.api_key=***", "x.TOKEN=***"]


# ---------------------------------------------------------------------------------------------
# Settings that would be accepted and ignored, or contradict each other (issue 12)
# ---------------------------------------------------------------------------------------------

CLASSICAL = """\
name: c
trainable: classical
scheduler: {type: fifo}
resources: {cpu: 1, gpu: 0.5}
space:
  classifier: {name: knn, k: {int: [1, 3]}}
"""
FIFO = VALID.replace("type: asha", "type: fifo")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            VALID + "metric: train_acc\n",
            "metric: the search selects on validation metrics; allowed: val_acc, val_loss, "
            "got 'train_acc'",
        ),
        (
            VALID + "metric: train_loss\n",
            "metric: the search selects on validation metrics; allowed: val_acc, val_loss, "
            "got 'train_loss'",
        ),
        (
            FIFO,
            "scheduler.grace_period: means nothing to scheduler.type fifo (only asha stops "
            "trials early); remove it or use type: asha",
        ),
        (
            FIFO.replace("grace_period: 1", "reduction_factor: 2"),
            "scheduler.reduction_factor: means nothing to scheduler.type fifo (only asha stops "
            "trials early); remove it or use type: asha",
        ),
        (CLASSICAL, "resources.gpu: the classical trainable runs on CPUs only; set 0, got 0.5"),
        (
            VALID + "  epochs: {int: [1, 3]}\n",
            "space.epochs: up to 3 epochs exceeds scheduler.max_epochs (2): a trial would have "
            "two epoch budgets; keep epochs <= max_epochs, or leave it out",
        ),
        (
            VALID + "  epochs: 5\n",
            "space.epochs: up to 5 epochs exceeds scheduler.max_epochs (2): a trial would have "
            "two epoch budgets; keep epochs <= max_epochs, or leave it out",
        ),
        (
            VALID + "  epochs: {choice: [1, 4]}\n",
            "space.epochs: up to 4 epochs exceeds scheduler.max_epochs (2): a trial would have "
            "two epoch budgets; keep epochs <= max_epochs, or leave it out",
        ),
    ],
    ids=[
        "train_acc",
        "train_loss",
        "fifo_grace",
        "fifo_reduction",
        "classical_gpu",
        "epochs_int",
        "epochs_const",
        "epochs_choice",
    ],
)
def test_contradicting_settings_fail_with_their_one_line(tmp_path, capsys, monkeypatch, text, line):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(tmp_path, capsys, text)
    assert code == 2
    assert err == f"tuner: error: {tmp_path / 'spec.yaml'}: {line}\n"


def test_settings_that_fit_together_load(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        VALID.replace("type: asha, ", "type: fifo, ").replace(", grace_period: 1", "")
        + "  epochs: {choice: [1, 2]}\n"
    )
    spec = load_spec(spec_file)
    assert spec.scheduler.type == "fifo"
    spec_file.write_text(CLASSICAL.replace("gpu: 0.5", "gpu: 0"))
    assert load_spec(spec_file).resources.gpu == 0


@pytest.mark.parametrize(
    ("lines", "mode"),
    [
        ("", "max"),
        ("metric: val_loss\n", "min"),
        ("metric: val_loss\nmode: max\n", "max"),  # given: kept
        ("metric: val_acc\nmode: min\n", "min"),
    ],
)
def test_mode_follows_the_metric_unless_given(tmp_path, lines, mode):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(VALID + lines)
    assert load_spec(spec_file).mode == mode


def test_classical_f1_is_maximised(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(CLASSICAL.replace("gpu: 0.5", "gpu: 0") + "metric: val_f1\n")
    assert load_spec(spec_file).mode == "max"


GRID = """\
name: g
search: {algorithm: grid, max_concurrent: 1}
scheduler: {type: fifo, max_epochs: 1}
space:
  model: {name: simple_cnn, width: {choice: [8, 16, 24]}}
  optimizer: {name: adam, lr: 1e-3}
"""


@pytest.mark.parametrize(("extra", "trials"), [([], 3), (["search.num_samples=2"], 6)])
def test_grid_runs_once_by_default_and_num_samples_repeats_it(tmp_path, extra, trials):
    from ray.tune.experiment import Experiment

    from tuner.search.searchers import param_space, tune_config

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(GRID)
    spec = load_spec(spec_file, extra)
    tree = spec.tree
    config = tune_config(spec, tree)
    searcher = config.search_alg  # what Tune counts trials with: no Ray needed
    searcher.add_configurations(
        [
            Experiment(
                "g", lambda c: None, config=param_space(spec, tree), num_samples=config.num_samples
            )
        ]
    )
    assert searcher.total_samples == trials
    assert searcher.max_concurrent == 1  # search.max_concurrent applies to grid and random too


def test_max_concurrent_limits_optuna(tmp_path):
    from ray.tune.search import ConcurrencyLimiter

    from tuner.search.searchers import tune_config

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(VALID.replace("num_samples: 2", "num_samples: 2, max_concurrent: 3"))
    spec = load_spec(spec_file)
    searcher = tune_config(spec, spec.tree).search_alg
    assert isinstance(searcher, ConcurrencyLimiter) and searcher.max_concurrent == 3
