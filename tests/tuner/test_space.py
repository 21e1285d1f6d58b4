"""The space language: parsing, sampling with Optuna, and the Ray Tune translations."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.variant_generator import generate_variants

from tuner.search import searchers as search
from tuner.spec import space as space_lang
from tuner.spec.document import read_yaml

SPACE = read_yaml(
    """
model:
  name: simple_cnn
  width: {int: [16, 64], log: true}
  dropout: {uniform: [0.0, 0.5]}
optimizer:
  choice:
    sgd:
      lr: {loguniform: [1e-3, 1e-1]}
      momentum: {uniform: [0.5, 0.99]}
    adam:
      lr: {loguniform: [1e-4, 1e-2]}
batch_size: {choice: [32, 64]}
blocks: {choice: [[1, 1, 1, 4], [2, 2, 2, 2]]}
epochs: 5
""",
    "test",
)


def sample(params: dict) -> dict:
    tree = space_lang.parse(SPACE)
    return search.optuna_define_by_run(tree)(optuna.trial.FixedTrial(params))


BASE = {"model.width": 16, "model.dropout": 0.1, "batch_size": 32, "blocks": "[1, 1, 1, 4]"}


def test_sgd_branch_samples_momentum_and_nests_the_config():
    config = sample(
        {**BASE, "optimizer.name": "sgd", "optimizer.sgd.lr": 0.01, "optimizer.sgd.momentum": 0.9}
    )
    assert config["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.9}
    assert config["model"] == {"name": "simple_cnn", "width": 16, "dropout": 0.1}
    assert config["epochs"] == 5
    assert config["blocks"] == [1, 1, 1, 4]  # lists travel through Optuna as JSON


def test_adam_branch_never_has_momentum():
    config = sample({**BASE, "optimizer.name": "adam", "optimizer.adam.lr": 0.001})
    assert config["optimizer"] == {"name": "adam", "lr": 0.001}


def test_sgd_branch_asks_the_sampler_for_its_own_parameters():
    # FixedTrial raises when asked for a parameter it wasn't given: here sgd's momentum.
    with pytest.raises(ValueError, match=r"optimizer\.sgd\.momentum"):
        sample({**BASE, "optimizer.name": "sgd", "optimizer.sgd.lr": 0.01})


def test_int_bounds_are_inclusive_under_optuna():
    tree = space_lang.parse({"n": {"int": [1, 3]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    define = search.optuna_define_by_run(tree)
    seen = {define(study.ask())["n"] for _ in range(200)}
    assert seen == {1, 2, 3}


def test_int_bounds_are_inclusive_under_ray_random():
    # Ray's randint excludes its upper bound; the YAML's includes it.
    domain = search.ray_param_space(space_lang.parse({"n": {"int": [1, 3]}}))
    seen = {
        config["n"]
        for seed in range(200)
        for _, config in generate_variants(domain, random_state=np.random.RandomState(seed))
    }
    assert seen == {1, 2, 3}


def test_log_scales_reach_both_decades():
    tree = space_lang.parse({"lr": {"loguniform": [1e-5, 1e-1]}})
    define = search.optuna_define_by_run(tree)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    values = np.array([define(study.ask())["lr"] for _ in range(400)])
    assert values.min() >= 1e-5 and values.max() <= 1e-1
    # Log-uniform: about a quarter of the samples fall in each decade.
    assert 0.15 < np.mean(values < 1e-4) < 0.35


def test_ray_random_keeps_branches_apart():
    domain = search.ray_param_space(space_lang.parse(SPACE))
    configs = [
        config
        for seed in range(50)
        for _, config in generate_variants(domain, random_state=np.random.RandomState(seed))
    ]
    for config in configs:
        assert ("momentum" in config["optimizer"]) == (config["optimizer"]["name"] == "sgd")
        assert 16 <= config["model"]["width"] <= 64
    assert {c["optimizer"]["name"] for c in configs} == {"sgd", "adam"}


def test_grid_enumerates_branches_and_ints():
    tree = space_lang.parse(
        {
            "opt": {"choice": {"sgd": {"momentum": {"choice": [0.5, 0.9]}}, "adam": {}}},
            "depth": {"int": [1, 2]},
            "fixed": 3,
        }
    )
    domain = search.ray_grid_space(tree)
    configs = [config for _, config in generate_variants(domain)]
    assert len(configs) == 3 * 2
    assert {"name": "adam"} in [c["opt"] for c in configs]
    assert all(c["fixed"] == 3 for c in configs)


def test_grid_refuses_continuous_ranges_naming_the_path():
    tree = space_lang.parse({"opt": {"choice": {"sgd": {"lr": {"uniform": [0.1, 0.2]}}}}})
    with pytest.raises(space_lang.SpaceError, match=r"space\.opt\.choice\.sgd\.lr: grid search"):
        space_lang.check_grid(tree)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"lr": {"loguniform": [0, 1]}}, r"space\.lr: loguniform needs 0 < lo"),
        ({"lr": {"uniform": [2, 1]}}, r"space\.lr\.uniform: needs lo <= hi"),
        ({"lr": {"uniform": [1]}}, r"two numbers"),
        ({"n": {"int": [1.5, 3]}}, r"space\.n\.int: bounds must be finite integers"),
        ({"n": {"choice": []}}, r"space\.n\.choice: must be a non-empty list"),
        ({"n": {"uniform": [0, 1], "int": [0, 1]}}, r"exactly one of"),
        ({"n": {"uniform": [0, 1], "log": True}}, r"`log` applies to `int` only"),
        ({"o": {"choice": {"sgd": 3}}}, r"space\.o\.choice\.sgd: a branch must be a mapping"),
    ],
)
def test_malformed_distributions_name_the_key_path(raw, message):
    with pytest.raises(space_lang.SpaceError, match=message):
        space_lang.parse(raw)


def test_trial_params_name_a_branch_s_settings_under_the_branch():
    config = {
        "model": {"name": "simple_cnn", "width": 16, "dropout": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "batch_size": 32,
        "blocks": [1, 1, 1, 4],
        "epochs": 5,
    }
    assert space_lang.trial_params(space_lang.parse(SPACE), config) == {
        "model.name": "simple_cnn",
        "model.width": 16,
        "model.dropout": 0.1,
        "optimizer.name": "sgd",
        "optimizer.sgd.lr": 0.1,
        "optimizer.sgd.momentum": 0.9,
        "batch_size": 32,
        "blocks": [1, 1, 1, 4],
        "epochs": 5,
    }


def test_sampled_keys_name_each_branch_s_settings_apart():
    tree = space_lang.parse(SPACE)
    assert space_lang.sampled_keys(tree) == [
        "model.width",
        "model.dropout",
        "optimizer.name",
        "optimizer.sgd.lr",
        "optimizer.sgd.momentum",
        "optimizer.adam.lr",
        "batch_size",
        "blocks",
    ]
    # What every trial has, by its config path: the progress table's columns.
    assert space_lang.sampled_keys(tree, common_only=True) == [
        "model.width",
        "model.dropout",
        "optimizer.name",
        "batch_size",
        "blocks",
    ]


def test_ray_s_optuna_search_suggests_the_config_alone_under_the_one_name():
    """Through Ray's OptunaSearch, a trial's config holds the space's keys only (no searcher
    bookkeeping), and Optuna's parameters are the names MLflow and the tables use."""
    tree = space_lang.parse(SPACE)
    searcher = OptunaSearch(
        space=search.optuna_define_by_run(tree),
        metric="val_acc",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    branches = set()
    for index in range(8):
        config = searcher.suggest(f"t{index}")
        assert set(config) == {"model", "optimizer", "batch_size", "blocks", "epochs"}
        params = space_lang.trial_params(tree, config)
        optuna_params = searcher._ot_trials[f"t{index}"].params
        assert set(optuna_params) == set(params) & set(space_lang.sampled_keys(tree))
        branches.add(params["optimizer.name"])
    assert branches == {"sgd", "adam"}
