"""`manifest`: a CSV or Parquet table of path,label[,split], bad rows skipped one line each."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import data
from data.storage import place


@pytest.fixture
def images(tmp_path, digits):
    """12 digit PNGs of each of 3 classes in tmp_path/images: [(file name, label)]."""
    folder = tmp_path / "images"
    folder.mkdir()
    x, y = digits
    rows = []
    for label in range(3):
        for index in np.flatnonzero(y == label)[:12]:
            name = f"{index:04d}.png"
            cv2.imwrite(str(folder / name), x[index, 0])
            rows.append((name, ["zero", "one", "two"][label]))
    return rows


def _csv(path, rows, split=None) -> None:
    header = "path,label" + (",split" if split else "")
    lines = [f"{p},{lab}" + (f",{split(i)}" if split else "") for i, (p, lab) in enumerate(rows)]
    path.write_text("\n".join([header, *lines]) + "\n")


def test_bad_rows_are_one_warning_naming_them_and_the_rest_trains(tmp_path, images):
    rows = images
    bad = [("missing.png", "one"), ("0001.png", "zebra"), ("", "two")]
    folder = tmp_path / "images"  # the manifest beside its images: paths relative to it
    _csv(folder / "list.csv", [*rows[:20], *bad, *rows[20:]])
    with pytest.warns(UserWarning) as caught:
        files = data.read(
            "manifest",
            folder / "list.csv",
            image_size=8,
            grayscale=True,
            classes=["zero", "one", "two"],
        )
    (warning,) = caught
    message = str(warning.message)
    assert "\n" not in message and message.startswith("manifest: skipped 3 bad row(s) of ")
    assert f"row 21 ({folder}/missing.png: no such file)" in message
    assert "row 22 (label 'zebra' is not one of the classes)" in message
    assert "row 23 (no path)" in message
    assert len(files.paths) == len(rows) and files.paths[0] == f"{folder}/{rows[0][0]}"
    assert files.classes == ("zero", "one", "two") and files.split is None
    assert np.bincount(files.labels).tolist() == [12, 12, 12]


def test_a_split_column_fixes_the_splits_and_parquet_reads_alike(tmp_path, images):
    rows = images
    rows = [(f"images/{p}", label) for p, label in rows]
    every = ["train", "train", "val", "test"]  # a quarter each for val and test
    _csv(tmp_path / "list.csv", rows, split=lambda i: every[i % 4])
    table = pa.table(
        {
            "path": [p for p, _ in rows],
            "label": [label for _, label in rows],
            "split": [every[i % 4] for i in range(len(rows))],
        }
    )
    pq.write_table(table, tmp_path / "list.parquet")
    loaded = [
        data.load("manifest", root=tmp_path / name, image_size=8, grayscale=True)
        for name in ("list.csv", "list.parquet")
    ]
    for splits in loaded:
        assert splits.sizes == "train=18 val=9 test=9"
        assert splits.classes == ("one", "two", "zero")  # sorted when classes is unset
    assert all(np.array_equal(loaded[0].test_x, other.test_x) for other in loaded[1:])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\na.png,x\n", r"lacks column\(s\) path; it has file, label"),
        ("path,label\nnone.png,x\n", r"no usable row in .*: row 1 \(.*none.png: no such file\)"),
    ],
)
def test_unusable_manifests_are_one_line_errors(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(data.DatasetError, match=message) as error:
        data.read("manifest", tmp_path / "m.csv")
    assert "\n" not in str(error.value)


def test_auto_keeps_small_data_in_memory_and_large_in_the_cache(images, tmp_path):
    rows = images
    _csv(tmp_path / "images" / "list.csv", rows)
    files = data.read(
        "manifest", tmp_path / "images" / "list.csv", image_size=100
    )  # 36 x 30,000 bytes
    assert files.decoded_bytes == 36 * 3 * 100 * 100
    assert place(files, "auto", memory=100 * files.decoded_bytes).where == "memory"
    large = place(files, "auto", memory=5 * files.decoded_bytes)
    assert large.where == "cache"
    assert large.reason == (
        "36 images, 1.1 MB decoded at 100 px (20% of this node's 5.4 MB): kept in each node's "
        "cache on disk (data.keep_in: auto, over 10%)"
    )
    # Within 10% of a large node, but over 512 MB: the driver's peak while it puts them would
    # be twice that, and the cache trains as fast.
    big = data.read("manifest", tmp_path / "images" / "list.csv", image_size=2400)
    over = place(big, "auto", memory=100 * big.decoded_bytes)
    assert big.decoded_bytes > 512e6 and over.where == "cache"
    assert over.reason.endswith(
        "kept in each node's cache on disk (data.keep_in: auto, over 512.0 MB)"
    )
    assert place(files, "memory", memory=1).where == "memory"  # forced either way
    with pytest.raises(data.DatasetError, match=r"data\.keep_in: cache needs a loader that lists"):
        place(data.read("digits"), "cache")
