"""A manifest: a CSV or Parquet table of ``path,label[,split]``, the images where they lie."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from data.files import SHOWN, SPLIT_NAMES, ImageFiles, is_uri
from data.registry import DatasetError, register
from models.options import POSITIVE


@register("manifest")
def manifest(
    root: Path | str | None = None,
    *,
    image_size: Annotated[int, POSITIVE] = 64,  # pixels a side, after resizing
    grayscale: bool = False,
    classes: list[str] | None = None,
) -> ImageFiles:
    """The images a manifest lists: ``data.root`` is the CSV or Parquet file, with columns
    ``path`` and ``label`` (a class name) and optionally ``split`` (train, val or test).

    Relative paths are read from the manifest's folder. ``classes``: the class names in label
    order; unset, the labels found, sorted. A row with a missing file, an unknown label or
    split is skipped with one warning naming the first few; the rest of the data trains.
    """
    if root is None:
        raise DatasetError(
            "manifest: data.root is not set; point it at a CSV or Parquet file with columns "
            "path,label[,split]"
        )
    table = _read_table(str(root))
    base = str(root).rsplit("/", 1)[0] if is_uri(root) else str(Path(root).expanduser().parent)
    paths = [_joined(base, str(p)) if p is not None else "" for p in table["path"]]
    labels = ["" if v is None else str(v) for v in table["label"]]
    splits = [str(v).strip().lower() if v else "" for v in table.get("split") or [""] * len(paths)]
    names = tuple(classes) if classes else tuple(sorted(set(labels) - {""}))
    index = {name: i for i, name in enumerate(names)}
    bad: list[str] = []
    kept: list[int] = []
    for row, (path, label, split) in enumerate(zip(paths, labels, splits, strict=True)):
        problem = _row_problem(path, label, split, index)
        if problem:
            bad.append(f"row {row + 1} ({problem})")
        else:
            kept.append(row)
    if not kept:
        raise DatasetError(f"manifest: no usable row in {root}: {', '.join(bad[:SHOWN])}")
    if bad:
        shown = ", ".join(bad[:SHOWN]) + (", ..." if len(bad) > SHOWN else "")
        warnings.warn(f"manifest: skipped {len(bad)} bad row(s) of {root}: {shown}", stacklevel=2)
    has_split = "split" in table and any(splits[row] for row in kept)
    return ImageFiles(
        tuple(paths[row] for row in kept),
        np.asarray([index[labels[row]] for row in kept], dtype=np.int64),
        names,
        tuple(splits[row] or "train" for row in kept) if has_split else None,
        image_size=image_size,
        grayscale=bool(grayscale),
    )


def _read_table(where: str) -> dict[str, list[Any]]:
    """The manifest's columns as lists (pyarrow reads CSV and Parquet, local or by URI)."""
    import pyarrow.csv
    import pyarrow.parquet

    try:
        if is_uri(where):
            import fsspec

            with fsspec.open(where, "rb") as stream:
                blob = stream.read()
            source: Any = pyarrow.BufferReader(blob)
        else:
            source = str(Path(where).expanduser())
        if where.lower().endswith((".parquet", ".pq")):
            table = pyarrow.parquet.read_table(source)
        else:  # every column as text: labels like "007" keep their zeros
            table = pyarrow.csv.read_csv(
                source, convert_options=pyarrow.csv.ConvertOptions(strings_can_be_null=True)
            )
    except (OSError, pyarrow.ArrowInvalid) as error:
        reason = " ".join(str(error).split())
        raise DatasetError(f"manifest: cannot read {where} as CSV or Parquet: {reason}") from None
    missing = [name for name in ("path", "label") if name not in table.column_names]
    if missing:
        raise DatasetError(
            f"manifest: {where} lacks column(s) {', '.join(missing)}; it has "
            f"{', '.join(table.column_names) or 'none'} (expected path,label[,split])"
        )
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _joined(base: str, path: str) -> str:
    path = path.strip()
    if is_uri(path) or path.startswith(("/", "~")):
        return os.path.expanduser(path) if path.startswith("~") else path
    return f"{base}/{path}"


def _row_problem(path: str, label: str, split: str, index: dict[str, int]) -> str:
    """Why a manifest row can't be used ("" when it can)."""
    if not path:
        return "no path"
    if label not in index:
        return f"label {label!r} is not one of the classes" if label else "no label"
    if split and split not in SPLIT_NAMES:
        return f"split {split!r} is not train, val or test"
    if not is_uri(path) and not os.path.isfile(path):  # a URI is checked when it is read
        return f"{path}: no such file"
    return ""
