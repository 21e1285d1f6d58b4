"""`image_folder`: PNG / JPEG files of varying sizes, one sub-folder per class."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import data
from data.cache import in_memory


def test_images_are_resized_unreadable_ones_skipped_and_a_test_folder_used(
    tmp_path, fashion, write_image_tree
):
    x, y = fashion
    train = write_image_tree(tmp_path / "train", x[:600], y[:600], classes=4)
    test = write_image_tree(tmp_path / "test", x[600:], y[600:], classes=4)
    (tmp_path / "train" / "class_0" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "train" / "class_1" / "empty.jpg").write_bytes(b"")
    (tmp_path / "train" / "class_1" / "._0001.jpg").write_bytes(b"macOS metadata")  # hidden
    (tmp_path / "train" / "class_2" / "notes.txt").write_text("not an image suffix")
    with pytest.warns(UserWarning, match="skipped 2 unreadable image"):
        splits = data.load(
            "image_folder",
            root=tmp_path / "train",
            val_fraction=0.25,
            test_fraction=0.9,  # ignored: test_root is the test split
            image_size=20,
            grayscale=True,
            test_root=tmp_path / "test",
        )
    assert splits.classes == ("class_0", "class_1", "class_2", "class_3")
    assert splits.train_x.shape[1:] == (1, 20, 20) and splits.train_x.dtype == torch.uint8
    assert len(splits.train_y) + len(splits.val_y) == sum(train.values())
    assert len(splits.test_y) == sum(test.values())
    counts = [test[name] for name in splits.classes]
    assert np.bincount(splits.test_y, minlength=4).tolist() == counts
    # Stratified: val holds a quarter of each class's files, to within one image (the split is
    # made on the files listed, before the broken ones are skipped).
    listed = np.array([train[name] for name in splits.classes]) + np.array([1, 1, 0, 0])
    assert np.abs(np.bincount(splits.val_y, minlength=4) - listed / 4).max() <= 1.5


def test_pixels_keep_their_values_colour_order_and_the_default_size(tmp_path):
    for name, bgr in (("blue", (255, 0, 0)), ("red", (0, 0, 255))):
        (tmp_path / name).mkdir()
        for index, size in enumerate((10, 64, 100)):  # smaller, equal to, larger than 64 px
            cv2.imwrite(
                str(tmp_path / name / f"{index}.png"), np.full((size, size, 3), bgr, np.uint8)
            )
    files = data.DATASETS["image_folder"](tmp_path)  # listed, not decoded
    assert isinstance(files, data.ImageFiles) and files.classes == ("blue", "red")
    assert files.split is None  # load() makes the test split
    x = in_memory(files.paths, files.image_size, files.grayscale).images
    assert x.shape == (6, 3, 64, 64)
    red = x[files.labels == 1]
    assert (red[:, 0] == 255).all() and (red[:, 1:] == 0).all()  # RGB, not OpenCV's BGR


def test_a_png_at_the_target_size_round_trips_exactly(tmp_path, digits):
    x, _ = digits
    for name, images in (("a", x[:5]), ("b", x[5:10])):
        (tmp_path / name).mkdir()
        for index, image in enumerate(images):
            cv2.imwrite(str(tmp_path / name / f"{index}.png"), image[0])
    files = data.DATASETS["image_folder"](tmp_path, image_size=8, grayscale=True)
    assert np.array_equal(in_memory(files.paths, 8, True).images, x[:10])


def _tree(root, layout: str) -> None:
    if layout == "missing":
        return
    root.mkdir()
    if layout == "empty":
        return
    for name in ("a", "b"):
        (root / name).mkdir()
        for index in range(5):  # enough to split 5 classes 3 ways, stratified
            cv2.imwrite(str(root / name / f"{index}.png"), np.zeros((8, 8), np.uint8))
    if layout == "one_class":
        for path in (root / "b").iterdir():
            path.unlink()
        (root / "b").rmdir()
    elif layout == "three_classes":
        (root / "c").mkdir()
        cv2.imwrite(str(root / "c" / "x.png"), np.zeros((8, 8), np.uint8))
    elif layout == "empty_class":
        (root / "c").mkdir()
        (root / "c" / "readme.txt").write_text("no images here")
    elif layout == "unreadable_class":
        (root / "c").mkdir()
        for index in range(5):
            (root / "c" / f"{index}.jpg").write_bytes(b"\xff\xd8 truncated jpeg")


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "images is not a directory; point data.root"),
        ("empty", r"needs one sub-folder of images per class \(2 or more\), found 0"),
        ("one_class", r"\(2 or more\), found 1"),
        ("empty_class", r"class folder .*images/c has no images \(\.bmp"),
        ("unreadable_class", r"none of the 5 images of class 'c' decode \(e\.g\. .*images/c/0"),
    ],
)
def test_bad_folders_are_one_line_dataset_errors(tmp_path, layout, message):
    root = tmp_path / "images"
    _tree(root, layout)
    with pytest.raises(data.DatasetError, match=message) as error:
        data.load("image_folder", root=root)
    assert "\n" not in str(error.value)


def test_test_root_must_have_the_same_classes(tmp_path):
    _tree(tmp_path / "images", "two_classes")
    _tree(tmp_path / "other", "three_classes")
    with pytest.raises(data.DatasetError, match=r"test_root .*other has classes \['a', 'b', 'c'\]"):
        data.load("image_folder", root=tmp_path / "images", test_root=str(tmp_path / "other"))


@pytest.mark.parametrize("options", [{}, {"image_size": 0}, {"image_size": "64"}])
def test_image_folder_needs_a_root_and_a_positive_size(tmp_path, options):
    _tree(tmp_path / "images", "two_classes")
    root = tmp_path / "images" if options else None
    with pytest.raises(
        data.DatasetError,
        match=r"data\.root is not set|image_size=.* is not allowed; must be an integer >= 1",
    ):
        data.load("image_folder", root=root, **options)


def test_images_at_any_depth_and_through_links_belong_to_their_class(tmp_path):
    image = np.full((8, 8, 3), 200, dtype=np.uint8)
    for name in ("a", "b"):
        (tmp_path / name / "deeper" / "still").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / name / "top.png"), image)
        cv2.imwrite(str(tmp_path / name / "deeper" / "still" / "low.png"), image)
    (tmp_path / "a" / "linked.png").symlink_to(tmp_path / "b" / "top.png")
    (tmp_path / "a" / "dangling.png").symlink_to(tmp_path / "nowhere.png")  # not a file
    files = data.read("image_folder", tmp_path, image_size=8)
    shown = sorted(
        (str(Path(path).relative_to(tmp_path)), label)
        for path, label in zip(files.paths, files.labels, strict=True)
    )
    assert shown == [
        ("a/deeper/still/low.png", 0),
        ("a/linked.png", 0),
        ("a/top.png", 0),
        ("b/deeper/still/low.png", 1),
        ("b/top.png", 1),
    ]
