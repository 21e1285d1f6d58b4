"""The fast-recipe options of the deep trainable (tuner/trainables/recipe.py and their use in
deep.TrainingRun), each trained for real on a few hundred digits."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from ray import tune

import data
import models.airbench
from data.augment import to_float
from tuner.spec import space as space_lang
from tuner.spec.document import SpecError, load_spec
from tuner.trainables import Settings, deep
from tuner.trainables.deep import (
    CHECKPOINT_FILE,
    TrainingRun,
    build_model,
    evaluate_test,
)
from tuner.trainables.recipe import Tta, WithTta

DIGITS = tuple(str(digit) for digit in range(10))
SETTINGS = Settings(max_epochs=2, seed=0, metric="val_acc", mode="max")
SMALL_AIRBENCH = {"name": "airbench", "widths": [16, 32]}
# airbench94's optimizer in tuner's units (see deep.build_optimizer): lr 11.5 per 1024 examples
# less Nesterov's gain 1 + 1 / (1 - 0.85) is 1.5; weight decay 0.0153 / 11.5.
AIRBENCH_SGD = {
    "name": "sgd",
    "lr": 1.5,
    "lr_per_examples": 1024,
    "momentum": 0.85,
    "nesterov": True,
    "weight_decay": 0.0153 / 11.5,
}


@pytest.fixture(scope="module")
def splits() -> data.Splits:
    return data.load("digits", max_train=300)


def _trial(splits: data.Splits, **config: Any) -> TrainingRun:
    return TrainingRun({"model": SMALL_AIRBENCH, "batch_size": 32, **config}, splits, SETTINGS)


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().cpu().clone() for t in model.state_dict().values()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------
# Parameter groups and learning-rate scaling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decay_biases", [True, False])
def test_biases_get_the_scaled_lr_and_the_decay_per_step_of_the_weights_or_none(
    splits, decay_biases
):
    optimizer = {**AIRBENCH_SGD, "bias_lr_scale": 64, "bias_weight_decay": decay_biases}
    trial = _trial(splits, optimizer=optimizer, batch_size=256)
    weights, biases = trial.optimizer.param_groups
    lr = 1.5 * 256 / 1024  # lr per 1024 examples, times the batch
    assert weights["lr"] == pytest.approx(lr) and biases["lr"] == pytest.approx(64 * lr)
    assert weights["weight_decay"] == pytest.approx(0.0153 / 11.5)
    expected = weights["weight_decay"] / 64 if decay_biases else 0.0
    assert biases["weight_decay"] == pytest.approx(expected)
    # The biases group holds every trainable 1-D parameter (BN shifts, the whitening bias), and
    # no frozen one (airbench's whitening weights and BN scales).
    trainable = {name: p for name, p in trial.model.named_parameters() if p.requires_grad}
    assert {id(p) for p in biases["params"]} == {id(p) for p in trainable.values() if p.ndim == 1}
    assert {id(p) for p in weights["params"]} == {id(p) for p in trainable.values() if p.ndim > 1}
    assert any("norm" in name for name, p in trainable.items() if p.ndim == 1)
    # The schedule scales both groups by the same factor: the ratio holds during training.
    trial.schedule = {"name": "onecycle"}
    trial.train_epoch()
    assert biases["lr"] / weights["lr"] == pytest.approx(64)
    assert weights["lr"] != pytest.approx(lr)  # the schedule did move it


def test_adamw_biases_decay_from_its_default_weight_decay(splits):
    trial = _trial(splits, optimizer={"name": "adamw", "bias_lr_scale": 4})
    weights, biases = trial.optimizer.param_groups
    assert weights["weight_decay"] == 0.01  # AdamW's own default, kept
    assert biases["weight_decay"] == pytest.approx(0.01 / 4)


def test_without_bias_options_there_is_one_group_as_before(splits):
    trial = _trial(splits, optimizer={"name": "sgd", "lr": 0.1, "weight_decay": 1e-4})
    (group,) = trial.optimizer.param_groups
    assert len(group["params"]) == len(list(trial.model.parameters()))
    assert group["lr"] == 0.1 and group["weight_decay"] == 1e-4


@pytest.mark.parametrize("batch_size", [16, 64])
def test_lr_per_examples_scales_each_steps_lr_with_the_batch(splits, batch_size):
    optimizer = {"name": "sgd", "lr": 2.0, "lr_per_examples": 512}
    trial = _trial(splits, optimizer=optimizer, batch_size=batch_size)
    assert trial.optimizer.param_groups[0]["lr"] == pytest.approx(2.0 * batch_size / 512)
    assert trial.base_lrs == [pytest.approx(2.0 * batch_size / 512)]


# ---------------------------------------------------------------------------------------------
# Data-dependent initialisation
# ---------------------------------------------------------------------------------------------


def test_data_init_sets_the_whitening_stem_before_the_first_step(splits):
    torch.manual_seed(SETTINGS.seed)
    plain = build_model({"model": SMALL_AIRBENCH}, splits)  # what the trial's seed builds
    trial = _trial(splits)  # data_init on by default
    off = _trial(splits, data_init=0)
    stem = {"plain": plain.whiten.weight, "off": off.model.whiten.weight.cpu()}
    stem |= {"on": trial.model.whiten.weight.cpu()}
    assert torch.equal(stem["off"], stem["plain"])
    assert not torch.allclose(stem["on"], stem["plain"])
    # Exactly data_init on the normalised, un-augmented training images (all 240 here: < 5000).
    # On the trial's device: eigenvectors' signs may differ between devices.
    plain.to(trial.device).data_init(to_float(trial.data["train"][0], trial.mean, trial.std))
    assert torch.allclose(stem["on"], plain.whiten.weight.cpu(), atol=1e-5)
    few = _trial(splits, data_init=50)
    assert not torch.allclose(few.model.whiten.weight.cpu(), stem["on"])


def test_data_init_takes_a_bounded_sample_of_large_images_converted_a_pass_at_a_time(
    splits, monkeypatch
):
    """Large images give as many 2x2 patches from fewer images: data_init sees at most
    DATA_INIT_PIXELS at the trial's resolution (here 100 images), never a float copy of 5,000."""
    monkeypatch.setattr(deep, "DATA_INIT_PIXELS", 100 * 8 * 8)  # digits: 8 px
    monkeypatch.setattr(deep, "EVAL_PIXELS", 30 * 8 * 8)  # passes of 30 images
    seen: list[int] = []
    data_init = models.airbench.AirbenchNet.data_init
    monkeypatch.setattr(
        models.airbench.AirbenchNet,
        "data_init",
        lambda self, images: (seen.append(len(images)), data_init(self, images))[1],
    )
    trial = _trial(splits)
    torch.manual_seed(SETTINGS.seed)
    plain = build_model({"model": SMALL_AIRBENCH}, splits).to(trial.device)
    data_init(plain, to_float(trial.data["train"][0][:100], trial.mean, trial.std))
    assert seen == [100]
    assert torch.allclose(trial.model.whiten.weight, plain.whiten.weight, atol=1e-5)


def test_models_without_data_init_train_as_before(splits):
    config = {"model": {"name": "simple_cnn", "width": 8, "depth": 1}, "data_init": 100}
    assert TrainingRun(config, splits, SETTINGS).train_epoch()[0] > 0


def test_a_trial_gives_the_augmentation_each_images_training_index_and_the_epoch(splits):
    trial = _trial(splits, augment={"hflip": "alternate"})
    seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (epoch, index, images)
    augment = trial.augment

    class Recording:
        enabled = True

        def __call__(self, x: torch.Tensor, generator: Any, **where: Any) -> torch.Tensor:
            seen.append((where["epoch"], where["index"].clone(), x.clone()))
            return augment(x, generator, **where)

    trial.augment = Recording()
    trial.train_epoch()
    trial.train_epoch()
    train_x = to_float(trial.data["train"][0], trial.mean, trial.std)
    for epoch in (0, 1):
        batches = [(index, x) for e, index, x in seen if e == epoch]
        everyone = torch.cat([index for index, _ in batches])
        assert sorted(everyone.tolist()) == list(range(len(train_x)))  # each image once
        assert all(torch.equal(x, train_x[index]) for index, x in batches)  # its own index


# ---------------------------------------------------------------------------------------------
# Weight averaging, checkpoints and resume
# ---------------------------------------------------------------------------------------------

RECIPE = {
    "optimizer": {**AIRBENCH_SGD, "bias_lr_scale": 16},
    "label_smoothing": 0.2,
    "augment": {"crop_padding": 1, "padding_mode": "reflect", "hflip": "alternate"},
    "ema": {"decay": 0.8, "every": 2},
    "tta": {"flip": True, "translate": 1},
}


def test_ema_weights_differ_from_the_trained_ones_and_are_what_val_evaluates(splits):
    trial = _trial(splits, **RECIPE)
    trial.train_epoch()
    trial.train_epoch()
    steps = 2 * -(-len(splits.train_y) // 32)  # 2 epochs of ceil(240 / 32) = 8 steps
    assert int(trial.averaged.n_averaged) == steps // 2
    assert trial.eval_model is trial.averaged.module
    assert not _same(_weights(trial.eval_model), _weights(trial.model))
    val_x, val_y = trial.data["val"]
    loss, acc = trial.evaluate("val")
    averaged = trial.averaged.module.eval()
    with torch.no_grad(), trial._autocast():  # as evaluate does: bf16 on a GPU
        expected = trial.tta(averaged, to_float(val_x, trial.mean, trial.std))
    assert loss == pytest.approx(float(trial.loss_fn(expected, val_y)), rel=1e-5)
    assert acc == pytest.approx(float((expected.argmax(1) == val_y).float().mean()))
    with torch.no_grad(), trial._autocast():
        raw = trial.tta(trial.model.eval(), to_float(val_x, trial.mean, trial.std))
    assert not torch.allclose(raw, expected)


def test_a_resumed_trial_continues_exactly_where_it_stopped(splits, tmp_path):
    straight = _trial(splits, **RECIPE)
    for _ in range(3):
        straight.train_epoch()

    first = _trial(splits, **RECIPE)
    first.train_epoch()
    torch.save(first.state(), tmp_path / CHECKPOINT_FILE)
    resumed = _trial(splits, **RECIPE)  # data_init runs again; the checkpoint overwrites it
    resumed.load_state(torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True))
    resumed.train_epoch()
    resumed.train_epoch()

    assert _same(_weights(resumed.model), _weights(straight.model))
    assert _same(_weights(resumed.averaged.module), _weights(straight.averaged.module))
    assert resumed.averaged.n_averaged == straight.averaged.n_averaged


def test_the_test_split_sees_the_last_epochs_averaged_weights_with_tta(splits, tmp_path):
    """The trial is chosen by its last epochs (tuner.core.selection): its last epoch is tested,
    not the first's, even when the first validated better."""
    config = {"model": SMALL_AIRBENCH, "batch_size": 32, **RECIPE}
    trial = TrainingRun(config, splits, SETTINGS)
    trial.train_epoch()
    first = trial.predict(splits.test_x).cpu()
    trial.train_epoch()
    last = trial.predict(splits.test_x).cpu()
    assert not torch.equal(first.argmax(1), last.argmax(1))  # the two epochs are told apart
    torch.save(trial.state(), tmp_path / CHECKPOINT_FILE)

    result = SimpleNamespace(config=config, checkpoint=tune.Checkpoint.from_directory(tmp_path))
    evaluation = evaluate_test(result, splits=splits, settings=SETTINGS)
    assert (evaluation.y_pred == last.argmax(1).numpy()).mean() == 1
    # The exported model applies the same TTA: it predicts what the test measured.
    assert isinstance(evaluation.model.network, WithTta)
    with torch.no_grad():
        exported = evaluation.model(splits.test_x.float())
    agreement = (exported.argmax(1).numpy() == evaluation.y_pred).mean()
    assert agreement >= (1.0 if trial.device.type == "cpu" else 0.95)  # bf16 on a GPU


# ---------------------------------------------------------------------------------------------
# Test-time augmentation
# ---------------------------------------------------------------------------------------------


def test_tta_averages_views_and_changes_an_untrained_models_predictions(splits):
    plain, augmented = _trial(splits), _trial(splits, tta={"flip": True, "translate": 1})
    assert _same(_weights(plain.model), _weights(augmented.model))  # same seed, same net
    x = plain.data["val"][0]  # on the trial's device
    assert not torch.allclose(plain.predict(x), augmented.predict(x))
    model, inputs = plain.model.eval(), to_float(x, plain.mean, plain.std)
    with torch.no_grad():
        flip_only = Tta(flip=True)(model, inputs)
        assert torch.allclose(flip_only, (model(inputs) + model(inputs.flip(-1))) / 2)
        # Flip TTA can't tell an image from its mirror image...
        assert torch.allclose(Tta(flip=True)(model, inputs.flip(-1)), flip_only, atol=1e-6)
        # ...and leaves a left-right symmetric image's logits as they are.
        symmetric = inputs + inputs.flip(-1)
        assert torch.allclose(Tta(flip=True)(model, symmetric), model(symmetric), atol=1e-6)
        assert not torch.allclose(model(inputs.flip(-1)), model(inputs))


# ---------------------------------------------------------------------------------------------
# torch.compile, the spec language, a GPU run
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_compile_is_skipped_on_cpu_and_training_is_unchanged(splits):
    compiled, eager = _trial(splits, compile=True), _trial(splits)
    assert compiled.train_model is compiled.model
    assert compiled.train_epoch() == eager.train_epoch()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_whole_recipe_trains_on_a_gpu_compiled(cifar_images):
    # CIFAR-sized: on 8x8 digits (airbench's maps shrink to 1x1) torch 2.11's inductor failed
    # in the backward pass (a weight gradient's strides, channels_last).
    x, y = (torch.from_numpy(a) for a in cifar_images)
    splits = data.Splits(x[:400], y[:400], x[400:500], y[400:500], x[500:], y[500:], DIGITS)
    trial = _trial(splits, **RECIPE, compile=True)
    assert trial.train_model is not trial.model  # torch.compile's wrapper
    losses = [trial.train_epoch()[0] for _ in range(6)]
    assert losses[-1] < losses[0], losses
    _, acc = trial.evaluate("val")
    assert acc > 0.3, (losses, acc)
    assert trial.averaged.module.whiten.weight.device.type == "cuda"


def test_the_spec_language_accepts_the_recipe_and_refuses_unknown_options(tmp_path):
    text = (
        "name: recipe\n"
        "space:\n"
        "  model: {name: airbench}\n"
        "  optimizer: {name: sgd, lr: 1.5, lr_per_examples: 1024, bias_lr_scale: 64,"
        " bias_weight_decay: false}\n"
        "  augment: {hflip: alternate, crop_padding: 2, padding_mode: reflect}\n"
        "  data_init: 5000\n"
        "  ema: {decay: {choice: [0.0, 0.9]}, every: 5}\n"
        "  tta: {flip: true, translate: {choice: [0, 1]}}\n"
        "  compile: true\n"
    )
    (tmp_path / "ok.yaml").write_text(text)
    spec = load_spec(tmp_path / "ok.yaml")
    assert "ema.decay" in space_lang.sampled_keys(spec.tree)
    for bad, path in [
        ("ema: {decay: 0.9, evry: 5}", "space.ema.evry"),
        ("tta: {flip: true, shift: 1}", "space.tta.shift"),
        ("optimizer: {name: adam, lr_per_examples: 1024}", "space.optimizer.lr_per_examples"),
    ]:
        (tmp_path / "bad.yaml").write_text(f"name: bad\nspace:\n  {bad}\n")
        with pytest.raises(SpecError, match=path.replace(".", r"\.")):
            load_spec(tmp_path / "bad.yaml")
