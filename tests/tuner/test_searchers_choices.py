"""The search algorithms beside tuner's default: Optuna's GP and CMA-ES samplers
(``search.sampler``) and Tune's BOHB with its HyperBand scheduler (``search.algorithm: bohb``),
checked at load, translated from the space, and run end to end on a function trainable with a
conditional space (real Ray, Optuna and MLflow)."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from ray.tune.schedulers import ASHAScheduler, HyperBandForBOHB

from tests.helpers import new_store, tuner_run
from tuner.search.searchers import config_space, optuna_sampler, tune_config
from tuner.spec import document
from tuner.spec.document import SpecError, load_spec
from tuner.spec.space import parse, trial_params
from tuner.tracking.records import latest_parent, trials_of
from tuner.tracking.tags import Status

SPACE = {
    "x": {"uniform": [0.0, 1.0]},
    "n": {"int": [1, 8], "log": True},
    "blocks": {"choice": [[1, 1], [2, 2]]},
    "opt": {"choice": {"a": {"lr": {"loguniform": [1e-3, 1.0]}}, "b": {"m": {"uniform": [0, 1]}}}},
    "fixed": 3,
}
MODULE = "tuner_test_searchers_fit"  # unique: it stays imported for the rest of the session
FIT = '''
import tuner
from torch import nn


def fit(config):
    """Epoch e reports a value that rises with e and peaks at x = 0.3 with branch a."""
    state = tuner.checkpoint()  # HyperBand pauses trials and resumes them from here
    bonus = 0.1 if config["opt"]["name"] == "a" else 0.0
    for epoch in range(state["epoch"] if state else 0, config["epochs"]):
        value = 0.8 + bonus - 0.5 * (config["x"] - 0.3) ** 2 - 0.1 / (epoch + 1)  # < 0.9
        tuner.report({"val_acc": value}, checkpoint={"epoch": epoch + 1})


def test(config, checkpoint, data):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
'''


def spec_text(search: str, scheduler: str = "max_epochs: 3", extra: str = "") -> str:
    space = "\n".join(f"  {key}: {value}" for key, value in SPACE.items())
    return textwrap.dedent(f"""\
        name: choices
        trainable: "{MODULE}:fit"
        data: {{dataset: digits, seed: 0}}
        search: {{{search}}}
        scheduler: {{{scheduler}}}
        final: {{repeats: 1}}
        resources: {{cpu: 1}}
        """) + extra + f"space:\n{space}\n"  # fmt: skip


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / f"{MODULE}.py").write_text(FIT)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("search", "scheduler", "extra", "message"),
    [
        (
            "algorithm: random, sampler: gp",
            "max_epochs: 3",
            "",
            "search.sampler: only search.algorithm optuna has an Optuna study; got random",
        ),
        ("sampler: bayes", "max_epochs: 3", "", "search.sampler: must be 'tpe', 'gp' or 'cmaes'"),
        (
            "sampler: cmaes",
            "max_epochs: 3",
            "objectives: [{val_acc: max}, {model_params: min}]\n",
            "search.sampler: cmaes optimizes one objective",
        ),
        (
            "algorithm: bohb",
            "type: fifo, max_epochs: 3",
            "",
            "scheduler.type: search.algorithm bohb runs its own HyperBand scheduler",
        ),
        (
            "algorithm: bohb",
            "max_epochs: 3, grace_period: 2",
            "",
            "scheduler.grace_period: search.algorithm bohb runs its own HyperBand scheduler",
        ),
    ],
)
def test_a_search_choice_that_cannot_run_is_one_line_at_load(
    tmp_path, search, scheduler, extra, message
):
    with pytest.raises(SpecError) as error:
        load_spec(write(tmp_path, spec_text(search, scheduler, extra)))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_choice_whose_package_is_missing_names_the_install(tmp_path, monkeypatch):
    # Only a package no environment has: the message is the same with or without the bohb extra.
    monkeypatch.setitem(document.NEEDS, "bohb", ("tuner_no_such_package",))
    with pytest.raises(SpecError) as error:
        load_spec(write(tmp_path, spec_text("algorithm: bohb")))
    assert str(error.value).endswith(
        "search.algorithm: bohb needs tuner_no_such_package: pip install tuner_no_such_package, "
        "or leave search.algorithm out (tuner's default)"
    )


def test_each_sampler_is_optunas_own_seeded_with_the_startup_trials(tmp_path):
    for sampler, kind in [
        ("tpe", optuna.samplers.TPESampler),
        ("gp", optuna.samplers.GPSampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
    ]:
        search = f"sampler: {sampler}, startup_trials: 3, seed: 7"
        spec = load_spec(write(tmp_path, spec_text(search)))
        made = optuna_sampler(spec.search)
        assert isinstance(made, kind)
        assert made._n_startup_trials == 3  # one setting for every sampler
        config = tune_config(spec, spec.tree)
        assert isinstance(config.scheduler, ASHAScheduler)
        assert isinstance(config.search_alg._sampler, kind)


@pytest.mark.parametrize(
    ("search", "sampler"),
    [
        ("seed: 0", optuna.samplers.GPSampler),  # 10 trials
        (f"num_samples: {document.GP_MAX_TRIALS}", optuna.samplers.GPSampler),
        (f"num_samples: {document.GP_MAX_TRIALS + 1}", optuna.samplers.TPESampler),
        ("num_samples: 24, sampler: tpe", optuna.samplers.TPESampler),  # named: kept
    ],
)
def test_the_default_sampler_is_a_gp_up_to_its_most_trials_then_tpe(tmp_path, search, sampler):
    spec = load_spec(write(tmp_path, spec_text(search)))
    assert isinstance(tune_config(spec, spec.tree).search_alg._sampler, sampler)


def test_a_random_search_has_no_sampler(tmp_path):
    spec = load_spec(write(tmp_path, spec_text("algorithm: random")))
    assert spec.search.sampler is None


# search.algorithm bohb needs the `bohb` extra (hpbandster builds netifaces from source).
needs_bohb = pytest.mark.skipif(
    importlib.util.find_spec("hpbandster") is None, reason="pip install -e '.[bohb]'"
)


@needs_bohb
def test_bohb_samples_the_spaces_configs_under_its_names_with_its_own_scheduler(tmp_path):
    spec = load_spec(write(tmp_path, spec_text("algorithm: bohb, max_concurrent: 2, seed: 3")))
    config = tune_config(spec, spec.tree)
    assert isinstance(config.scheduler, HyperBandForBOHB)
    searcher = config.search_alg
    configs = [searcher.suggest(str(i)) for i in range(2)]
    assert searcher.suggest("2") is None  # its own concurrency limit
    again = tune_config(spec, spec.tree).search_alg
    assert [again.suggest(str(i)) for i in range(2)] == configs  # seeded
    for trial_id, trial in enumerate(configs):
        assert trial["fixed"] == 3 and trial["blocks"] in ([1, 1], [2, 2])
        assert ("lr" in trial["opt"]) == (trial["opt"]["name"] == "a")  # only its branch's
        # BOHB models the settings under the names MLflow and Optuna show (constants aside).
        sampled = set(trial_params(spec.tree, trial)) - {"fixed"}
        assert set(searcher.trial_to_params[str(trial_id)]) == sampled


@needs_bohb
def test_bohbs_configspace_makes_a_branchs_settings_conditional_on_it():
    tree = parse(
        {"opt": SPACE["opt"], "outer": {"choice": {"p": {"inner": SPACE["opt"]}, "q": {}}}}
    )
    space = config_space(tree)
    parents = {c.child.name: (c.parent.name, c.value) for c in space.conditions}
    assert parents == {
        "opt.a.lr": ("opt.name", "a"),
        "opt.b.m": ("opt.name", "b"),
        "outer.p.inner.name": ("outer.name", "p"),
        "outer.p.inner.a.lr": ("outer.p.inner.name", "a"),  # the innermost branch
        "outer.p.inner.b.m": ("outer.p.inner.name", "b"),
    }


@pytest.mark.parametrize(
    ("search", "scheduler"),
    [
        # 2 random trials first: the sampler's own model picks the other 4
        ("sampler: gp, startup_trials: 2", "max_epochs: 3, reduction_factor: 2"),
        ("sampler: cmaes, startup_trials: 2", "max_epochs: 3, reduction_factor: 2"),
        pytest.param("algorithm: bohb", "max_epochs: 3, reduction_factor: 3", marks=needs_bohb),
    ],
)
def test_each_choice_runs_a_search_end_to_end(ray_session, tmp_path_factory, search, scheduler):
    store = new_store(tmp_path_factory, "choices")
    text = spec_text(f"{search}, num_samples: 6, max_concurrent: 2, seed: 0", scheduler)
    tuner_run(store, write(store.tmp, text).read_text())
    client: MlflowClient = store.client
    trials = trials_of(client, latest_parent(client, "choices"))
    assert len(trials) == 6
    assert {t.status for t in trials} <= {Status.COMPLETED, Status.EARLY_STOPPED}
    epochs = []
    for trial in trials:
        steps = [m.step for m in client.get_metric_history(trial.run_id, "val_acc")]
        assert steps == list(range(1, len(steps) + 1))  # each epoch once, paused or not
        epochs.append(len(steps))
        assert ("opt.a.lr" in trial.params) == (trial.params["opt.name"] == "a")
    assert max(epochs) == 3  # the first trial at each rung goes on, under ASHA and HyperBand
    if "bohb" in search:  # HyperBand's first bracket keeps 1 of 3 trials after 1 epoch
        assert min(epochs) < 3  # (which ones ASHA stops depends on the order results arrive)
