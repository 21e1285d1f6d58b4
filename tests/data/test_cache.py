"""`data.cache`: image files decoded once per node into a memory-mapped cache, real files and
real processes: shared by processes that start together, never used half-built, rebuilt when
a file changes, and holding exactly the splits the in-memory path makes."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import data
from data import cache

SPLITS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def photos(tmp_path, digits, write_image_tree):
    """Three classes of PNG / JPEG digits (about 300 images), one corrupt file, one empty."""
    write_image_tree(tmp_path / "photos", digits[0][:450], digits[1][:450], classes=3)
    (tmp_path / "photos" / "class_0" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (tmp_path / "photos" / "class_2" / "empty.png").write_bytes(b"")
    return tmp_path / "photos"


def _load(root: Path, cache_dir: Path, keep_in: str = "cache") -> data.Splits:
    return data.load(
        "image_folder",
        root=root,
        seed=3,
        keep_in=keep_in,
        cache_dir=str(cache_dir),
        image_size=12,
        grayscale=True,
    )


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.is_dir() and not p.suffix)


def test_the_cache_holds_the_very_splits_decoded_in_memory(photos, tmp_path):
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\) of \d+: .*corrupt"):
        in_memory = _load(photos, tmp_path / "cache", keep_in="memory")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        cached = _load(photos, tmp_path / "cache")
    for name in SPLITS:
        assert torch.equal(getattr(cached, name), getattr(in_memory, name)), name
    assert cached.classes == in_memory.classes
    assert len(_entries(tmp_path / "cache")) == 2  # train+val, and test
    # Memory-mapped, read-only; train and val one block, so training on both is a view.
    assert _mapping(cached.train_x.data_ptr()).endswith("images.u8")
    assert _mapping(cached.test_x.data_ptr()).split()[1].startswith("r-")  # read-only pages
    both = cached.with_val_in_train().train_x
    assert both.data_ptr() == cached.train_x.data_ptr() and len(both) == len(cached.train_x) + len(
        cached.val_x
    )
    # Sent to another process, the cached splits travel as their source, not as their pixels.
    blob = pickle.dumps(cached)
    assert len(blob) < 2_000 < cached.train_x.numel()
    assert torch.equal(pickle.loads(blob).val_x, cached.val_x)


def _mapping(address: int) -> str:
    """The line of /proc/self/maps holding ``address``: its permissions and file."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        start, end = (int(part, 16) for part in line.split()[0].split("-"))
        if start <= address < end:
            return line
    return ""


def test_a_changed_file_invalidates_the_cache(photos, tmp_path):
    with pytest.warns(UserWarning):
        before = _load(photos, tmp_path / "cache")
    first = _entries(tmp_path / "cache")
    # Another image in place of one file (its size and mtime change): another entry.
    changed = sorted((photos / "class_1").glob("*.png"))[0]
    cv2.imwrite(str(changed), np.full((30, 20), 255, np.uint8))
    with pytest.warns(UserWarning):
        after = _load(photos, tmp_path / "cache")
    assert len(_entries(tmp_path / "cache")) == 3  # one of the two parts holds that file
    assert set(first) < set(_entries(tmp_path / "cache"))
    assert _white(after) == _white(before) + 1  # the new pixels, not the cached ones


def test_entries_of_a_changed_source_unused_for_a_week_go_when_a_new_one_is_built(photos, tmp_path):
    folder = tmp_path / "cache"
    with pytest.warns(UserWarning):
        _load(photos, folder)
    first = _entries(folder)
    week = time.time() - cache.PRUNE_AFTER_S - 60
    for entry in first:  # last opened over a week ago
        os.utime(entry, (week, week))
    other = tmp_path / "other"  # another source's entry, as old: not this source's to remove
    other.mkdir()
    (other / "a.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    foreign = folder / cache.key([str(other / "a.png")], 12, True)
    cache.cached([str(other / "a.png")], 12, True, str(folder))
    os.utime(foreign, (week, week))

    changed = sorted((photos / "class_1").glob("*.png"))[0]
    cv2.imwrite(str(changed), np.full((30, 20), 255, np.uint8))
    with pytest.warns(UserWarning):
        after = _load(photos, folder)  # builds the changed part's entry, then prunes
    kept = set(_entries(folder))
    assert foreign in kept
    assert len(kept) == 3  # the new entry, the unchanged part's (opened: in use), the other's
    assert sum(entry in kept for entry in first) == 1
    assert not list(folder.glob("*.removed")) and not list(folder.glob("*.partial"))
    assert len(after.train_y) + len(after.val_y) + len(after.test_y) > 0


def _white(splits: data.Splits) -> int:
    """How many images of the splits are white all over."""
    images = (splits.train_x, splits.val_x, splits.test_x)
    return sum(int((x == 255).flatten(1).all(1).sum()) for x in images)


# A process that loads the photos into the cache; ``SLOW`` makes each image take 20 ms to
# decode (so a build lasts, for another process to meet it or a kill to cut it short), and the
# build writes the pid of the process that ran it to ``BUILDS``.
LOADER = """
import os, sys, time
from pathlib import Path
import data
from data import cache, decode

slow, builds = os.environ.get("SLOW"), Path(os.environ["BUILDS"])
if slow:
    plain = decode.decode
    decode.decode = lambda *a: (time.sleep(float(slow)), plain(*a))[1]
build = cache._build
def counted(*args):
    with builds.open("a") as file:
        file.write(f"{os.getpid()}\\n")
    build(*args)
cache._build = counted
Path(os.environ["GO"] + f"-ready-{os.getpid()}").touch()
while not Path(os.environ["GO"]).exists():  # start together
    time.sleep(0.01)
splits = data.load("image_folder", root=sys.argv[1], seed=3, keep_in="cache",
                   cache_dir=sys.argv[2], image_size=12, grayscale=True)
print(splits.sizes)
"""


def _loader(photos: Path, cache_dir: Path, tmp_path: Path, slow: str = "") -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SLOW": slow,
        "BUILDS": str(tmp_path / "builds"),
        "GO": str(tmp_path / "go"),
    }
    return subprocess.Popen(
        [sys.executable, "-c", LOADER, str(photos), str(cache_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_processes_that_start_together_build_the_cache_once(photos, tmp_path):
    loaders = [_loader(photos, tmp_path / "cache", tmp_path, slow="0.02") for _ in range(2)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go-ready-*"))) < 2:  # both imported data, waiting on GO
        assert time.monotonic() < deadline and all(p.poll() is None for p in loaders)
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [process.communicate(timeout=120) for process in loaders]
    assert [process.returncode for process in loaders] == [0, 0], outputs
    sizes = {out for out, _ in outputs}
    assert len(sizes) == 1 and sizes.pop().startswith("train=")
    # Two parts (train+val, test), each built by one process alone.
    assert len((tmp_path / "builds").read_text().split()) == 2
    assert any("waiting for another process" in err for _, err in outputs), outputs


@pytest.mark.slow
def test_a_build_killed_halfway_is_rebuilt_not_used(photos, tmp_path):
    cache_dir = tmp_path / "cache"
    (tmp_path / "go").touch()
    process = _loader(photos, cache_dir, tmp_path, slow="0.05")  # ~12 s for the first part
    deadline = time.monotonic() + 60
    while not list(cache_dir.glob("*.partial/images.u8")):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    time.sleep(1)  # some images written, most not
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(cache_dir.glob("*.partial")) and not _entries(cache_dir)  # never completed
    with pytest.warns(UserWarning, match="skipped 2"):
        rebuilt = _load(photos, cache_dir)
    assert not list(cache_dir.glob("*.partial"))  # the leftover was cleared by the rebuild
    with pytest.warns(UserWarning):
        expected = _load(photos, tmp_path / "elsewhere", keep_in="memory")
    for name in SPLITS:
        assert torch.equal(getattr(rebuilt, name), getattr(expected, name)), name


def test_images_from_a_uri_are_the_local_files_pixels(photos, tmp_path):
    with pytest.warns(UserWarning):
        local = _load(photos, tmp_path / "cache", keep_in="memory")
    with pytest.warns(UserWarning):
        remote = _load(f"file://{photos}", tmp_path / "cache")  # through fsspec
    for name in SPLITS:
        assert torch.equal(getattr(remote, name), getattr(local, name)), name


def test_decoding_skips_bad_files_and_keeps_the_rest_in_order(photos):
    paths = [str(p) for p in sorted((photos / "class_0").iterdir())][:6]
    paths.insert(2, str(photos / "class_0" / "corrupt.jpg"))
    decoded = cache.in_memory(paths, 12, grayscale=True)
    assert decoded.skipped.tolist() == [2]
    good = [p for p in paths if not p.endswith("corrupt.jpg")]
    one_by_one = [data.decode.decode(p, 12, True) for p in good]
    assert np.array_equal(decoded.images, np.stack(one_by_one))
