"""`cifar10`: the python-pickle batches from a directory, its parent, or the tarball."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

import data


@pytest.fixture
def cifar_dir(tmp_path, cifar_images, write_cifar):
    """600 digits as 3x32x32 colour images: 500 in five train batches, 100 in the test batch."""
    return write_cifar(tmp_path / "cifar-10-batches-py", *cifar_images, test_size=100)


def test_cifar10_from_the_batches_its_parent_and_the_tarball(
    tmp_path, cifar_images, cifar_dir, tar_gz
):
    x, y = cifar_images
    from_dir = data.load("cifar10", root=cifar_dir, val_fraction=0.2, test_fraction=0.7)
    assert from_dir.train_x.shape == (400, 3, 32, 32) and from_dir.train_x.dtype == torch.uint8
    assert from_dir.val_x.shape == (100, 3, 32, 32) and from_dir.val_y.dtype == torch.int64
    # The official test batch, untouched (test_fraction ignored), channels in RGB order.
    assert torch.equal(from_dir.test_x, torch.from_numpy(x[500:]))
    assert torch.equal(from_dir.test_y, torch.from_numpy(y[500:]))
    assert from_dir.classes == tuple(f"class_{i}" for i in range(10))
    test_images = {bytes(im.numpy()) for im in from_dir.test_x}
    assert test_images.isdisjoint(bytes(im.numpy()) for im in from_dir.train_x)
    assert test_images.isdisjoint(bytes(im.numpy()) for im in from_dir.val_x)

    from_parent = data.load("cifar10", root=tmp_path, val_fraction=0.2)
    assert torch.equal(from_parent.train_x, from_dir.train_x)

    tarball = tar_gz(cifar_dir, tmp_path / "elsewhere" / "cifar-10-python.tar.gz")
    for root in (tarball, tarball.parent):  # the file itself, or the folder it's in
        from_tar = data.load("cifar10", root=root, val_fraction=0.2)
        assert torch.equal(from_tar.train_x, from_dir.train_x)
        assert torch.equal(from_tar.test_y, from_dir.test_y)


def test_missing_cifar10_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(data.DatasetError) as error:
        data.load("cifar10", root=tmp_path)
    message = str(error.value)
    assert message.startswith(f"cifar10: no CIFAR-10 batches under {tmp_path} (looked for")
    assert f"`python -m tuner data fetch cifar10 --root {tmp_path}`" in message
    assert "\n" not in message


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo owned",))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing_batch", "has CIFAR-10 batches but lacks data_batch_3"),
        ("garbage", "data_batch_2 in .* is not a CIFAR-10 pickle batch"),
        ("runs_code", "posix.system is not allowed|os.system is not allowed"),
        ("wrong_shape", r"holds data \(100, 1024\)"),
        ("no_labels", "has no 'data' and 'labels'"),
        ("bad_label", "don't match its 10 classes"),
    ],
)
def test_damaged_batches_are_dataset_errors(cifar_dir, damage, message):
    batch = cifar_dir / "data_batch_2"
    if damage == "missing_batch":
        (cifar_dir / "data_batch_3").unlink()
    elif damage == "garbage":
        batch.write_bytes(b"this is not a pickle")
    elif damage == "runs_code":
        batch.write_bytes(pickle.dumps({b"data": _RunsCode()}))
    elif damage == "wrong_shape":
        batch.write_bytes(pickle.dumps({b"data": np.zeros((100, 1024), np.uint8), b"labels": []}))
    elif damage == "no_labels":
        batch.write_bytes(pickle.dumps({b"data": np.zeros((100, 3072), np.uint8)}))
    elif damage == "bad_label":
        rows = np.zeros((1, 3072), np.uint8)
        batch.write_bytes(pickle.dumps({b"data": rows, b"labels": [10]}))
    with pytest.raises(data.DatasetError, match=message):
        data.load("cifar10", root=cifar_dir)


def test_a_file_that_is_not_a_tarball_is_a_dataset_error(tmp_path):
    tarball = tmp_path / "cifar-10-python.tar.gz"
    tarball.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(data.DatasetError, match=r"cannot read .* as a tar archive"):
        data.load("cifar10", root=tmp_path)


def test_a_tarball_without_the_batches_names_what_it_lacks(tmp_path, tar_gz):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "readme.html").write_text("<p>hi</p>")
    tarball = tar_gz(tmp_path / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(data.DatasetError, match=r"lacks batches\.meta"):
        data.load("cifar10", root=tarball)
