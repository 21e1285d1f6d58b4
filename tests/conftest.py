"""Shared fixtures: one real local Ray for the session, real images, and writers of each
dataset file format (idx headers, Python-pickled CIFAR batches with bytes keys, PNG/JPEG trees)
so the loaders and the shipped specs are tested on real files.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pickle
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.helpers import DIGITS_SEARCH, Store, new_store, tuner_run
from tests.processes import Server, free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs Ray runs trials end to end: it is `slow`, outside README's unit tier."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs, started once and shut down at the end of the session (~8 s)."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits_search(ray_session, tmp_path_factory) -> Store:
    """One finished 3-trial search of DIGITS_SEARCH with every artifact, shared by the tests of
    the run itself, its artifacts, reports and the UI (each would run the same search again).
    What it printed is in ``<tmp>/output.txt`` (stdout, then stderr; off a terminal)."""
    store = new_store(tmp_path_factory, "digits_search")
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            tuner_run(store, DIGITS_SEARCH, "--num-samples", "3")
    finally:
        (store.tmp / "output.txt").write_text(stdout.getvalue() + stderr.getvalue())
        print(stdout.getvalue(), stderr.getvalue(), sep="\n")  # pytest shows it on a failure
    return store


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[Server]:
    """A real `mlflow server` on a free loopback port, one per test module; a test may stop it
    and start it again on the same port and database."""
    server = Server(tmp_path_factory.mktemp("mlflow_server"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
IDX_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 (N, 1, 8, 8) in 0..255, and int64 labels, shuffled (seed 0)."""
    bunch = load_digits()
    order = np.random.default_rng(0).permutation(len(bunch.target))
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None]
    return images[order], bunch.target.astype(np.int64)[order]


@pytest.fixture(scope="session")
def fashion_mnist_root() -> Path:
    """Where Debian's dataset-fashion-mnist puts its idx files; a test without them skips."""
    if not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            "needs Debian's dataset-fashion-mnist: apt-get install -y dataset-fashion-mnist "
            "(README's test command installs it)"
        )
    return FASHION_DIR


@pytest.fixture(scope="session")
def fashion(fashion_mnist_root) -> tuple[np.ndarray, np.ndarray]:
    """The first 1,000 Fashion-MNIST test images, uint8 (N, 1, 28, 28), and int64 labels."""
    with gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz") as stream:
        images = np.frombuffer(stream.read(16 + 1000 * 784)[16:], dtype=np.uint8)
    with gzip.open(FASHION_DIR / "t10k-labels-idx1-ubyte.gz") as stream:
        labels = np.frombuffer(stream.read(8 + 1000)[8:], dtype=np.uint8)
    return images.reshape(1000, 1, 28, 28).copy(), labels.astype(np.int64)


def _idx_bytes(array: np.ndarray) -> bytes:
    """An idx file of unsigned bytes: magic (0, 0, 0x08, ndim), big-endian sizes, values."""
    sizes = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, 0x08, array.ndim]) + sizes + array.astype(np.uint8).tobytes()


@pytest.fixture
def write_idx() -> Callable[..., Path]:
    """``write_idx(directory, train, test, compress=False) -> directory``; train / test are
    (images (N, 1, H, W), labels) pairs written as MNIST's four idx files."""

    def write(
        directory: Path,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        compress: bool = False,
    ) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {"train_x": train[0][:, 0], "train_y": train[1]}
        arrays |= {"test_x": test[0][:, 0], "test_y": test[1]}
        for key, array in arrays.items():
            blob = _idx_bytes(array)
            name = IDX_STEMS[key] + (".gz" if compress else "")
            (directory / name).write_bytes(gzip.compress(blob) if compress else blob)
        return directory

    return write


@pytest.fixture(scope="session")
def cifar_images(digits) -> tuple[np.ndarray, np.ndarray]:
    """600 digits as CIFAR-sized colour uint8 (N, 3, 32, 32) with three distinct channels (so a
    loader that mixes up channel order or layout gets caught), and their labels."""
    x, y = digits[0][:600], digits[1][:600]
    grey = np.stack([cv2.resize(im[0], (32, 32), interpolation=cv2.INTER_LINEAR) for im in x])
    return np.stack([grey, 255 - grey, grey // 2], axis=1), y


@pytest.fixture
def write_cifar() -> Callable[..., Path]:
    """``write_cifar(directory, x, y, test_size) -> directory``: the six CIFAR-10 pickles
    (``data`` as (N, 3072) uint8 rows, bytes keys as in the Python 2 originals)."""

    def write(directory: Path, x: np.ndarray, y: np.ndarray, test_size: int) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        rows = x.reshape(len(x), -1)
        chunks = np.array_split(np.arange(len(x) - test_size), 5)
        for i, chunk in enumerate(chunks, 1):
            batch = {
                b"batch_label": b"training",
                b"data": rows[chunk],
                b"labels": y[chunk].tolist(),
            }
            (directory / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
        test = {b"data": rows[-test_size:], b"labels": y[-test_size:].tolist()}
        (directory / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
        meta = {b"label_names": [f"class_{i}".encode() for i in range(10)], b"num_vis": 3072}
        (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
        return directory

    return write


@pytest.fixture
def tar_gz() -> Callable[[Path, Path], Path]:
    """``tar_gz(source, tarball) -> tarball``: ``source`` packed under its own name, as in
    cifar-10-python.tar.gz."""

    def pack(source: Path, tarball: Path) -> Path:
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball, "w:gz") as archive:
            archive.add(source, arcname=source.name)
        return tarball

    return pack


@pytest.fixture
def write_image_tree() -> Callable[..., dict[str, int]]:
    """``write_image_tree(root, x, y, classes) -> {class name: files written}``: one folder per
    class, PNG and JPEG files of varying sizes and shapes (rectangles, up to 3x upscaled)."""

    def write(root: Path, x: np.ndarray, y: np.ndarray, classes: int = 3) -> dict[str, int]:
        counts: dict[str, int] = {}
        for index, (image, label) in enumerate(zip(x, y, strict=True)):
            if label >= classes:
                continue
            name = f"class_{label}"
            (root / name).mkdir(parents=True, exist_ok=True)
            height, width = 8 + 5 * (index % 4), 8 + 3 * (index % 5)  # pixels
            picture = cv2.resize(image[0], (width, height), interpolation=cv2.INTER_LINEAR)
            suffix = ".png" if index % 2 else ".jpg"
            assert cv2.imwrite(str(root / name / f"{index:04d}{suffix}"), picture)
            counts[name] = counts.get(name, 0) + 1
        return counts

    return write
