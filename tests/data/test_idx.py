"""`mnist` and `fashion_mnist`: idx files (plain, gzipped, torchvision's layout, Debian's copy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import data

IDX_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _as_set(*images: torch.Tensor) -> set[bytes]:
    return {bytes(image.numpy()) for batch in images for image in batch}


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_mnist_reads_idx_files_and_keeps_the_official_test_split(
    tmp_path, digits, write_idx, compress
):
    x, y = digits
    write_idx(tmp_path, (x[:600], y[:600]), (x[600:800], y[600:800]), compress=compress)
    splits = data.load("mnist", root=tmp_path, val_fraction=0.25, test_fraction=0.9)
    assert splits.train_x.shape == (450, 1, 8, 8) and splits.train_x.dtype == torch.uint8
    assert splits.train_y.dtype == torch.int64 and len(splits.val_y) == 150
    # test_fraction is ignored: the test split is exactly the t10k files, in order.
    assert torch.equal(splits.test_x, torch.from_numpy(x[600:800]))
    assert torch.equal(splits.test_y, torch.from_numpy(y[600:800]))
    assert splits.classes == tuple("0123456789")
    # Train + val are exactly the train files, each image with its own label.
    labelled = {bytes(im): int(label) for im, label in zip(x[:600], y[:600], strict=True)}
    for images, labels in ((splits.train_x, splits.train_y), (splits.val_x, splits.val_y)):
        assert all(
            labelled[bytes(im.numpy())] == int(lb) for im, lb in zip(images, labels, strict=True)
        )
    assert _as_set(splits.train_x, splits.val_x) == {bytes(im) for im in x[:600]}
    # Stratified: val's class counts are train's in proportion (within one image per class).
    train_counts = np.bincount(splits.train_y, minlength=10)
    assert np.abs(np.bincount(splits.val_y, minlength=10) - train_counts / 3).max() <= 1


def test_fashion_mnist_from_a_root_in_torchvisions_layout(tmp_path, fashion, write_idx):
    x, y = fashion
    write_idx(tmp_path / "FashionMNIST" / "raw", (x[:800], y[:800]), (x[800:], y[800:]))
    splits = data.load("fashion_mnist", root=tmp_path, val_fraction=0.2)
    assert splits.train_x.shape == (640, 1, 28, 28)
    assert splits.test_x.shape == (200, 1, 28, 28)
    assert splits.classes[:2] == ("T-shirt/top", "Trouser") and splits.num_classes == 10
    assert _as_set(splits.test_x).isdisjoint(_as_set(splits.train_x, splits.val_x))


def test_fashion_mnist_is_found_where_debian_puts_it(fashion):  # (fashion: skip if absent)
    splits = data.load("fashion_mnist", max_train=1000, max_test=200, val_fraction=0.2, seed=3)
    assert splits.train_x.shape == (800, 1, 28, 28) and splits.train_x.dtype == torch.uint8
    assert splits.val_x.shape == (200, 1, 28, 28) and len(splits.test_y) == 200
    assert splits.classes[-1] == "Ankle boot"
    assert np.bincount(splits.val_y, minlength=10).tolist() == [20] * 10  # stratified subset
    assert np.bincount(splits.test_y, minlength=10).tolist() == [20] * 10


def test_a_mirrors_dotted_file_names_are_found(tmp_path, digits, write_idx):
    x, y = digits
    write_idx(tmp_path, (x[:100], y[:100]), (x[100:150], y[100:150]))
    for stem in IDX_STEMS.values():
        (tmp_path / stem).rename(tmp_path / stem.replace("-idx", ".idx"))
    assert len(data.load("mnist", root=tmp_path).test_y) == 50


def _break(tmp_path, how: str, write_idx, digits) -> None:
    images = tmp_path / IDX_STEMS["train_x"]
    if how == "truncated":
        images.write_bytes(images.read_bytes()[:-10])
    elif how == "not_idx":
        images.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    elif how == "bad_gzip":
        images.rename(images.with_name(images.name + ".gz"))  # plain bytes under a .gz name
    elif how == "swapped":
        labels = tmp_path / IDX_STEMS["train_y"]
        images.write_bytes(labels.read_bytes())
    elif how == "count":
        x, y = digits
        write_idx(tmp_path, (x[:100], y[:7]), (x[100:150], y[100:150]))
    elif how == "incomplete":
        (tmp_path / IDX_STEMS["test_y"]).unlink()


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "is truncated: header says"),
        ("not_idx", "not an idx file of unsigned bytes"),
        ("bad_gzip", "cannot read"),
        ("swapped", "has 1 dimensions, expected 3"),
        ("count", "train images and labels differ in count"),
        ("incomplete", "no idx files under"),
    ],
)
def test_malformed_idx_files_are_one_line_errors(tmp_path, digits, write_idx, how, message):
    x, y = digits
    write_idx(tmp_path, (x[:100], y[:100]), (x[100:150], y[100:150]))
    _break(tmp_path, how, write_idx, digits)
    with pytest.raises(data.DatasetError, match=message) as error:
        data.load("mnist", root=tmp_path)
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)


def test_gzip_with_corrupt_contents_is_a_dataset_error(tmp_path, digits, write_idx):
    x, y = digits
    write_idx(tmp_path, (x[:100], y[:100]), (x[100:150], y[100:150]), compress=True)
    path = tmp_path / (IDX_STEMS["train_x"] + ".gz")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 20] = bytes(20)  # damage the deflate stream
    path.write_bytes(bytes(blob))
    with pytest.raises(data.DatasetError, match="cannot read"):
        data.load("mnist", root=tmp_path)


def test_mnist_without_a_root_says_how_to_get_it():
    with pytest.raises(data.DatasetError, match=r"data.root is not set.*data fetch mnist"):
        data.load("mnist")
