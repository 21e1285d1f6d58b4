"""`DataSource`: the settings of `data.load` as a value, loaded where it runs, once per process."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch

import data

SPLITS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


@pytest.fixture
def image_root(tmp_path, digits, write_image_tree):
    """Three classes of 8x8 PNG / JPEG digits (120 images) in an image_folder tree."""
    write_image_tree(tmp_path / "images", digits[0][:180], digits[1][:180], classes=3)
    return tmp_path / "images"


def test_loads_the_very_splits_data_load_makes(image_root):
    settings = {"val_fraction": 0.25, "test_fraction": 0.2, "seed": 3, "max_train": 60}
    expected = data.load("image_folder", root=image_root, image_size=12, **settings)
    source = data.DataSource(
        "image_folder", root=str(image_root), options={"image_size": 12}, **settings
    )
    # What a trial on another node gets: the source after a trip through pickle.
    loaded = pickle.loads(pickle.dumps(source)).load()
    assert loaded.classes == expected.classes
    for name in SPLITS:
        assert torch.equal(getattr(loaded, name), getattr(expected, name)), name


def test_load_once_reads_the_files_once_per_process(image_root):
    source = data.DataSource("image_folder", root=str(image_root), options={"image_size": 12})
    first = source.load_once()
    shutil.rmtree(image_root)  # a second read would now fail
    again = pickle.loads(pickle.dumps(source))  # an equal source, as the next trial gets it
    assert again.load_once() is first
    assert list(data.source.LOADED) == [source] and data.source.LOADED[source] is first
    # Other settings are another dataset: read again (and the files are gone).
    other = data.DataSource("image_folder", root=str(image_root), options={"image_size": 16})
    with pytest.raises(data.DatasetError, match="is not a directory"):
        other.load_once()
    assert not data.source.LOADED  # the old entry made way; a failed load leaves none
