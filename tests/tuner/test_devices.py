"""The deep trainable across devices: GPU checkpoints read on a CPU driver, and the precision
each device trains in. Runs on CPU; a GPU checkpoint is written without a GPU by tagging the
storages as torch.save does on CUDA."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ray import tune

import data
from tuner.trainables import Settings
from tuner.trainables.deep import (
    CHECKPOINT_FILE,
    TrainingRun,
    compute_dtype,
    evaluate_test,
    restore,
)

SETTINGS = Settings(max_epochs=1, seed=0, metric="val_acc", mode="max")
CONFIG = {"model": {"name": "simple_cnn"}, "batch_size": 64}
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only reader")

# ---------------------------------------------------------------------------------------------
# Checkpoints written on a GPU
# ---------------------------------------------------------------------------------------------

TAG_AS_CUDA = False  # set by saved_on_cuda()


def _cuda_tagger(storage: torch.UntypedStorage) -> str | None:
    return "cuda:0" if TAG_AS_CUDA and storage.device.type == "cpu" else None


def _no_deserializer(storage: torch.UntypedStorage, location: str) -> None:
    return None  # leave reading to torch's own deserializers


# Priority 0 comes before torch's CPU tagger (10): while TAG_AS_CUDA, every CPU storage is
# recorded as "cuda:0", byte for byte what a GPU trial's torch.save writes for its tensors.
torch.serialization.register_package(0, _cuda_tagger, _no_deserializer)


@contextmanager
def saved_on_cuda() -> Iterator[None]:
    global TAG_AS_CUDA
    TAG_AS_CUDA = True
    try:
        yield
    finally:
        TAG_AS_CUDA = False


@pytest.fixture(scope="module")
def splits() -> data.Splits:
    return data.load("digits", max_train=300)


@pytest.fixture(scope="module")
def gpu_checkpoint(splits: data.Splits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained trial's checkpoint whose tensors are all tagged as CUDA's."""
    trial = TrainingRun(CONFIG, splits, SETTINGS)
    trial.train_epoch()
    trial.evaluate("val")
    directory = tmp_path_factory.mktemp("gpu_checkpoint")
    with saved_on_cuda():
        torch.save(trial.state(), directory / CHECKPOINT_FILE)
    return directory


@no_gpu
def test_the_checkpoint_is_a_cuda_one_that_a_plain_load_refuses(gpu_checkpoint: Path) -> None:
    # What tuner did before: no map_location, so torch wants the GPU the tensors were on.
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(gpu_checkpoint / CHECKPOINT_FILE, weights_only=True)


@no_gpu
def test_a_trial_resumes_from_a_gpu_checkpoint_on_cpu(
    gpu_checkpoint: Path, splits: data.Splits
) -> None:
    trial = TrainingRun(CONFIG, splits, SETTINGS)
    assert restore(trial, tune.Checkpoint.from_directory(gpu_checkpoint))  # False: unreadable
    assert trial.epoch == 1
    assert all(p.device.type == "cpu" for p in trial.model.parameters())
    trial.train_epoch()  # the optimizer's state and the generator's came back usable
    assert trial.epoch == 2


@no_gpu
def test_the_driver_tests_a_gpu_trial_on_cpu(gpu_checkpoint: Path, splits: data.Splits) -> None:
    result = SimpleNamespace(
        config=CONFIG, checkpoint=tune.Checkpoint.from_directory(gpu_checkpoint)
    )
    evaluation = evaluate_test(result, splits=splits, settings=SETTINGS)
    assert len(evaluation.y_pred) == len(splits.test_y)


# ---------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capability", "dtype"),
    [
        ((6, 0), torch.float16),  # Pascal P100: bf16 only emulated
        ((7, 0), torch.float16),  # Volta V100
        ((7, 5), torch.float16),  # Turing T4
        ((8, 0), torch.bfloat16),  # Ampere A100: bf16 in hardware
        ((8, 9), torch.bfloat16),  # Ada L4
        ((9, 0), torch.bfloat16),  # Hopper H100 / H200
    ],
)
def test_gpus_use_bf16_only_where_the_hardware_has_it(
    capability: tuple[int, int], dtype: torch.dtype
) -> None:
    assert compute_dtype(torch.device("cuda"), capability) == dtype


def test_cpu_trains_in_float32_without_a_scaler(splits: data.Splits) -> None:
    assert compute_dtype(torch.device("cpu"), (9, 0)) == torch.float32
    trial = TrainingRun(CONFIG, splits, SETTINGS)
    if trial.device.type == "cpu":
        assert trial.dtype == torch.float32 and not trial.scaler.is_enabled()
    loss, _ = trial.train_epoch()
    assert torch.isfinite(torch.tensor(loss))


def _fp16_trial(splits: data.Splits) -> TrainingRun:
    """What a pre-Ampere GPU trains with, forced on this device (CPU autocast has fp16 too)."""
    trial = TrainingRun(CONFIG, splits, SETTINGS)
    trial.dtype = torch.float16
    trial.scaler = torch.amp.GradScaler(trial.device.type)
    return trial


def test_fp16_trains_through_the_scaler_and_resumes_with_its_scale(splits: data.Splits) -> None:
    trial = _fp16_trial(splits)
    losses = [trial.train_epoch()[0] for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses
    state = trial.state()
    assert state["scaler"]["_growth_tracker"] > 0  # the scaler saw every step
    resumed = _fp16_trial(splits)
    resumed.load_state(state)
    assert resumed.scaler.state_dict() == trial.scaler.state_dict()
