"""The real loaders on real images written to disk in every supported format."""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import data
from data.loaders.idx import DEBIAN_FASHION_MNIST

FASHION = pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist"
)


def _digits(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    splits = data.load("digits", test_fraction=0.5, val_fraction=0.5)
    x = torch.cat([splits.train_x, splits.val_x, splits.test_x]).numpy()[:n]
    y = torch.cat([splits.train_y, splits.val_y, splits.test_y]).numpy()[:n]
    return x, y


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(blob))
    else:
        path.write_bytes(blob)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_files_keep_the_official_test_split(tmp_path, compress):
    x, y = _digits(300)
    _write_idx(tmp_path / "train-images-idx3-ubyte", x[:200, 0], compress)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", y[:200], compress)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", x[200:, 0], compress)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", y[200:], compress)
    splits = data.load("mnist", root=tmp_path, val_fraction=0.25, test_fraction=0.9)
    assert splits.train_x.shape == (150, 1, 8, 8) and splits.train_x.dtype == torch.uint8
    assert len(splits.val_y) == 50
    assert torch.equal(splits.test_x, torch.from_numpy(x[200:]))  # test_fraction ignored
    assert torch.equal(splits.test_y, torch.from_numpy(y[200:]))
    assert splits.classes == tuple("0123456789")


def test_a_truncated_idx_file_is_a_clear_error(tmp_path):
    x, y = _digits(20)
    for stem, array in (
        ("train-images-idx3-ubyte", x[:, 0]),
        ("t10k-images-idx3-ubyte", x[:, 0]),
        ("train-labels-idx1-ubyte", y),
        ("t10k-labels-idx1-ubyte", y),
    ):
        _write_idx(tmp_path / stem, array, compress=False)
    blob = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(blob[:-10])
    with pytest.raises(data.DatasetError, match="is truncated"):
        data.load("mnist", root=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path, name):
    with pytest.raises(data.DatasetError) as error:
        data.load(name, root=tmp_path / "nowhere")
    message = str(error.value)
    assert "nowhere" in message and f"python -m tuner data fetch {name}" in message
    assert "\n" not in message


def _cifar_batches(directory: Path, x: np.ndarray, y: np.ndarray) -> None:
    directory.mkdir(parents=True)
    rgb = np.repeat(x, 3, axis=1)  # real grey images as 3 channels
    images = np.stack(
        [cv2.resize(im.transpose(1, 2, 0), (32, 32)).transpose(2, 0, 1) for im in rgb]
    )
    flat = images.reshape(len(images), -1)
    chunks = np.array_split(np.arange(len(flat) - 50), 5)
    for i, chunk in enumerate(chunks, 1):
        batch = {b"data": flat[chunk], b"labels": y[chunk].tolist()}
        (directory / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test = {b"data": flat[-50:], b"labels": y[-50:].tolist()}
    (directory / "test_batch").write_bytes(pickle.dumps(test))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta))


def test_cifar10_from_a_directory_and_from_the_tarball(tmp_path):
    x, y = _digits(300)
    batches = tmp_path / "cifar-10-batches-py"
    _cifar_batches(batches, x, y)
    from_parent = data.load("cifar10", root=tmp_path, val_fraction=0.2)
    from_dir = data.load("cifar10", root=batches, val_fraction=0.2)
    assert from_parent.train_x.shape == (200, 3, 32, 32)
    assert from_parent.test_x.shape == (50, 3, 32, 32)
    assert from_parent.classes[0] == "class0"
    assert torch.equal(from_parent.train_x, from_dir.train_x)

    tarball = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(batches, arcname="cifar-10-batches-py")
    from_tar = data.load("cifar10", root=tarball, val_fraction=0.2)
    assert torch.equal(from_tar.test_x, from_dir.test_x)


def _image_tree(root: Path, x: np.ndarray, y: np.ndarray, classes: int = 3) -> None:
    for index, (image, label) in enumerate(zip(x, y, strict=True)):
        if label >= classes:
            continue
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        size = 8 + 4 * (index % 5)  # varying sizes
        picture = cv2.resize(image[0], (size, size + 3), interpolation=cv2.INTER_NEAREST)
        suffix = ".png" if index % 2 else ".jpg"
        cv2.imwrite(str(folder / f"{index}{suffix}"), picture)


def test_image_folder_resizes_skips_unreadable_and_takes_a_test_folder(tmp_path):
    x, y = _digits(300)
    _image_tree(tmp_path / "train", x[:200], y[:200])
    _image_tree(tmp_path / "test", x[200:], y[200:])
    (tmp_path / "train" / "class_0" / "broken.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        splits = data.load(
            "image_folder",
            root=tmp_path / "train",
            val_fraction=0.25,
            image_size=16,
            grayscale=True,
            test_root=str(tmp_path / "test"),
        )
    expected_train = int((y[:200] < 3).sum())
    assert splits.classes == ("class_0", "class_1", "class_2")
    assert splits.train_x.shape[1:] == (1, 16, 16)
    assert len(splits.train_y) + len(splits.val_y) == expected_train
    assert len(splits.test_y) == int((y[200:] < 3).sum())
    # Stratified: every class in both train and val.
    assert set(splits.val_y.tolist()) == {0, 1, 2}

    colour = data.load("image_folder", root=tmp_path / "test", image_size=12, test_fraction=0.3)
    assert colour.train_x.shape[1:] == (3, 12, 12)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "is not a directory"),
        ("one_class", "one sub-folder per class"),
        ("empty_class", "has no images"),
    ],
)
def test_image_folder_errors(tmp_path, layout, message):
    root = tmp_path / "images"
    if layout != "missing":
        (root / "a").mkdir(parents=True)
        cv2.imwrite(str(root / "a" / "x.png"), np.zeros((8, 8), np.uint8))
    if layout == "empty_class":
        (root / "b").mkdir()
    with pytest.raises(data.DatasetError, match=message):
        data.load("image_folder", root=root)


@FASHION
def test_fashion_mnist_is_found_where_debian_puts_it():
    splits = data.load("fashion_mnist", max_train=1000, max_test=200, val_fraction=0.2)
    assert splits.train_x.shape == (800, 1, 28, 28)
    assert len(splits.test_y) == 200
    assert splits.classes[0] == "T-shirt/top"
    assert np.bincount(splits.val_y.numpy(), minlength=10).min() >= 15  # stratified


def test_splits_are_disjoint_and_seeded():
    a = data.load("digits", seed=1)
    b = data.load("digits", seed=1)
    c = data.load("digits", seed=2)
    assert torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.train_x, c.train_x)
    # Together the splits are exactly the dataset: nothing shared, nothing lost.
    everything = sorted(bytes(im.numpy()) for im in torch.cat([a.train_x, a.val_x, a.test_x]))
    original = data.DATASETS["digits"](None).x
    assert everything == sorted(bytes(im) for im in original)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(data.DatasetError, match="known datasets: cifar10, digits, fashion_mnist"):
        data.load("imagenet")
