"""How a deep trial reads its data (tuner/trainables/deep.py): from the splits where they lie,
a batch at a time, never a copy of a split on the CPU; memory-mapped splits train exactly as
in-memory ones; training crops and evaluation's centre crop at the trial's resolution."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import data
from data import Splits
from data.augment import CROP_PCT, centre_crop, to_float
from tuner.spec import space as space_lang
from tuner.trainables import Settings, deep
from tuner.trainables.deep import TrainingRun, batches, epoch_order, fetch, fits_on

SETTINGS = Settings(max_epochs=1, seed=0, metric="val_acc", mode="max")
SMALL_CNN = {"name": "simple_cnn", "width": 8, "depth": 1}
CROPS = {"crop_scale": [0.35, 1.0], "hflip": True}  # random resized crops and flips
SPLIT_NAMES = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


@pytest.fixture(scope="module")
def splits() -> Splits:
    """Digits at 24 px (each 8 px digit scaled 3x): room for crops at a smaller resolution."""
    digits = data.load("digits", max_train=300)
    big = {
        name: (t.repeat_interleave(3, -1).repeat_interleave(3, -2) if name.endswith("x") else t)
        for name, t in zip(SPLIT_NAMES, _tensors(digits), strict=True)
    }
    return Splits(**big, classes=digits.classes)


def _tensors(splits: Splits) -> list[torch.Tensor]:
    return [getattr(splits, name) for name in SPLIT_NAMES]


def mapped(splits: Splits, folder: Path) -> Splits:
    """``splits`` read from read-only memory-mapped files, as a node's cache gives them."""
    tensors = {}
    for name, tensor in zip(SPLIT_NAMES, _tensors(splits), strict=True):
        array, path = tensor.numpy(), folder / f"{name}.npy"
        writer = np.memmap(path, dtype=array.dtype, mode="w+", shape=array.shape)
        writer[:] = array
        writer.flush()
        reader = np.memmap(path, dtype=array.dtype, mode="r", shape=array.shape)
        with warnings.catch_warnings():  # read-only: torch warns that writes would be unsafe
            warnings.simplefilter("ignore", UserWarning)
            tensors[name] = torch.from_numpy(reader)
    return Splits(**tensors, classes=splits.classes)


def _trial(splits: Splits, **config: Any) -> TrainingRun:
    return TrainingRun({"model": SMALL_CNN, "batch_size": 32, **config}, splits, SETTINGS)


# ---------------------------------------------------------------------------------------------
# Where the images are read
# ---------------------------------------------------------------------------------------------


def test_a_memory_mapped_split_trains_in_place_and_as_the_same_split_in_memory(splits, tmp_path):
    on_disk = mapped(splits, tmp_path)
    in_memory = Splits(*(t.clone() for t in _tensors(splits)), classes=splits.classes)
    config = {"augment": CROPS, "resolution": 16}
    trial = _trial(on_disk, **config)
    # The trial reads the mapped files' own pages: no copy of a split, then or after an epoch.
    for split, x in (("train", on_disk.train_x), ("val", on_disk.val_x)):
        assert trial.data[split][0].data_ptr() == x.data_ptr()
    metrics = trial.train_and_validate()
    assert trial.data["train"][0].data_ptr() == on_disk.train_x.data_ptr()
    twin = _trial(in_memory, **config)
    assert twin.data["train"][0].data_ptr() == in_memory.train_x.data_ptr()
    # The same seed gives the same epoch on either: the same batches, crops and weights.
    assert twin.train_and_validate() == metrics
    assert torch.equal(trial.predict(on_disk.test_x), twin.predict(in_memory.test_x))


def test_background_batches_train_as_batches_fetched_in_turn(splits, monkeypatch):
    in_turn = _trial(splits, augment=CROPS).train_and_validate()
    monkeypatch.setattr(deep, "PREFETCH_ON_CPU", True)  # the path a GPU trial takes
    assert _trial(splits, augment=CROPS).train_and_validate() == in_turn
    parts = list(torch.arange(240).flip(0).split(50))
    fetched = list(batches(splits.train_x, parts, torch.device("cpu")))
    assert [len(x) for x in fetched] == [50, 50, 50, 50, 40]
    assert all(torch.equal(x, splits.train_x[p]) for x, p in zip(fetched, parts, strict=True))
    stopped = batches(splits.train_x, parts, torch.device("cpu"))
    next(stopped)
    stopped.close()  # a run that stops mid-epoch waits for the batch being gathered, no more
    assert list(batches(splits.train_x, [], torch.device("cpu"))) == []


def test_fetch_reads_slices_and_indices_where_the_images_lie(splits):
    cpu = torch.device("cpu")
    window = fetch(splits.val_x, slice(5, 15), cpu)
    assert window.data_ptr() == splits.val_x[5].data_ptr()  # a view of the split, not a copy
    index = torch.tensor([3, 0, 7])
    assert torch.equal(fetch(splits.val_x, index, cpu), splits.val_x[index])


def test_each_epoch_is_a_new_order_with_each_batch_sorted():
    first = epoch_order(103, 16, torch.Generator().manual_seed(0))
    assert sorted(first.tolist()) == list(range(103))
    for batch in first.split(16):  # 6 batches of 16 and one of 7
        assert batch.tolist() == sorted(batch.tolist())
    assert torch.equal(first, epoch_order(103, 16, torch.Generator().manual_seed(0)))
    generator = torch.Generator().manual_seed(0)
    assert not torch.equal(epoch_order(103, 16, generator), epoch_order(103, 16, generator))


def test_only_splits_that_fit_comfortably_go_whole_to_a_gpu():
    assert fits_on(torch.device("cpu"), 10**15)  # there already: nothing is copied
    gpu = torch.device("cuda")
    assert fits_on(gpu, 250, free=1000) and not fits_on(gpu, 251, free=1000)
    assert not fits_on(torch.device("meta"), 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_split_too_large_for_the_gpu_stays_in_its_file_and_trains_as_well(
    splits, tmp_path, monkeypatch
):
    resident = _trial(splits, augment=CROPS)
    assert resident.data["train"][0].is_cuda  # small: the whole split on the GPU
    expected = resident.train_and_validate()
    monkeypatch.setattr(deep, "DEVICE_DATA_FRACTION", 0.0)  # as if the split were too large
    on_disk = mapped(splits, tmp_path)
    streamed = _trial(on_disk, augment=CROPS)
    assert streamed.data["train"][0].data_ptr() == on_disk.train_x.data_ptr()
    assert streamed.data["train"][1].is_cuda  # the labels go to the GPU: they are small
    metrics = streamed.train_and_validate()
    # The same batches and crops; bf16 and cuDNN's kernels may differ in the last bits.
    assert metrics["train_loss"] == pytest.approx(expected["train_loss"], rel=0.02)
    assert metrics["val_acc"] == pytest.approx(expected["val_acc"], abs=0.05)


# ---------------------------------------------------------------------------------------------
# The resolution a trial trains at
# ---------------------------------------------------------------------------------------------


def test_a_trial_trains_at_its_resolution_and_evaluates_the_centre_crop(splits):
    trial = _trial(splits, augment=CROPS, resolution=16)
    seen: list[tuple[int, ...]] = []

    class Recording(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape))
            return trial.model(x)

    trial.train_model = Recording()
    trial.train_epoch()
    assert set(seen) == {(32, 1, 16, 16), (16, 1, 16, 16)}  # 240 images: 7 x 32 and 16
    # Evaluation: the centre 87.5% of each 24 px image resized to 16, the same every time.
    assert trial.view.size == 16 and trial.view.crop_pct == CROP_PCT
    logits = trial.predict(splits.val_x)
    assert torch.equal(logits, trial.predict(splits.val_x))
    inputs = centre_crop(to_float(splits.val_x, trial.mean, trial.std), 16, CROP_PCT)
    with torch.no_grad():
        assert torch.allclose(logits, trial.eval_model.eval()(inputs), atol=1e-5)
    # Without random resized crops, evaluation sees the whole image (crop_pct 1) unless asked.
    assert _trial(splits, resolution=16).view.crop_pct == 1.0
    assert _trial(splits, resolution=16, crop_pct=0.9).view.crop_pct == 0.9


def test_the_tested_model_takes_the_images_at_the_datas_size(splits):
    trial = _trial(splits, augment=CROPS, resolution=16)
    trial.train_epoch()
    evaluation = deep._test(trial, splits)
    with torch.no_grad():  # what is exported and served: the 24 px images as they are stored
        served = evaluation.model(splits.test_x.float()).argmax(1).numpy()
    assert (served == evaluation.y_pred).all()


def test_the_space_can_search_the_crop_scale_and_the_resolution():
    searched = {
        "augment": {"crop_scale": {"uniform": [0.08, 0.5]}, "crop_ratio": [0.75, 1.333]},
        "resolution": {"choice": [96, 128]},
        "crop_pct": {"uniform": [0.8, 1.0]},
    }
    deep.check_space(space_lang.parse(searched), metric="val_acc")
    for bad, path in (
        ({"augment": {"crop_scale": {"uniform": [0.0, 0.5]}}}, "space.augment.crop_scale"),
        ({"augment": {"crop_ratio": [2.0, 1.0]}}, "space.augment.crop_ratio"),
        ({"resolution": {"int": [4, 64]}}, "space.resolution"),
        ({"crop_pct": 0}, "space.crop_pct"),
    ):
        with pytest.raises(space_lang.SpaceError, match=path.replace(".", r"\.")):
            deep.check_space(space_lang.parse(bad), metric="val_acc")
