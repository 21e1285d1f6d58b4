"""Memory and speed of a search on a folder of photos, kept in memory or in each node's cache.

For each size N it writes a synthetic folder of N JPEGs (random shapes around 256 px, a few
classes; no download; reused when present), then measures, all in one run:

- the decode limit: ``cv2.imdecode`` + ``cv2.resize`` alone over the files, on all cores;
- the cache build (``keep_in: cache`` into an empty cache): images per second of the cache's
  own work (stamping, decoding, writing and syncing every file), beside the whole load's
  (listing the folder and splitting it too);
- a real 2-trial search (``python -m tuner run``, simple_cnn, one epoch) with the images in
  memory and then from the cache, sampling every process of the run twice a second: the largest
  private memory of any process (USS: pages it shares with no other process, as psutil's
  ``memory_full_info().uss`` counts them, from /proc/PID/smaps_rollup), the machine's peak used
  memory (MemTotal - MemAvailable, above what was used before the run), and each trial's
  training throughput (train + val images over its epoch's seconds).

    python bench/bench_data_scale.py --images 4000 24000 --image-size 128

``--resolution R`` has the search train and evaluate at R px from images kept at
``--image-size`` (random resized crops and the centre crop resized to R): every image is still
read from memory or the cache each epoch, but the model costs what R costs, so an epoch of a
large folder fits on 2 CPU cores in minutes. A folder whose decoded images could not be held
in memory twice over (the driver's decoded copy while it is put in the object store) is
searched from the cache alone. The 100,000-image, 224-px search:

    python bench/bench_data_scale.py --images 100000 --image-size 224 --resolution 64 \
        --keep-in cache
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import data  # noqa: E402  (after the repository is on the path)

CLASSES = 4
SOURCE_PX = 256  # the photos' typical side, before resizing to --image-size
SAMPLE_S = 0.5  # seconds between memory samples

SPEC = """\
name: scale_{keep_in}_{images}
data: {{dataset: image_folder, root: {root}, keep_in: {keep_in}, cache_dir: {cache},
  options: {{image_size: {size}}}}}
search: {{algorithm: random, num_samples: 2, max_concurrent: 2, seed: 0}}
scheduler: {{type: fifo, max_epochs: 1}}
final: {{repeats: 1}}
resources: {{cpu: 1}}
space:
  model: {{name: simple_cnn, width: 16, depth: 2}}
  optimizer: {{choice: {{adam: {{lr: 0.003}}}}}}
  batch_size: 64
  resolution: {resolution}
"""
LIMIT_SAMPLE = 10_000  # files the decode limit is timed on: a rate, not a total


# ---------------------------------------------------------------------------------------------
# The synthetic photos
# ---------------------------------------------------------------------------------------------


def photo_folder(root: Path, count: int) -> Path:
    """``count`` JPEGs under ``root/<class>/``: smooth random colour fields with noise, each
    class its own tint, sides 192-320 px (reused when the folder already holds them; a folder
    cut short goes on from the files it holds)."""
    folder = root / f"photos_{count}"
    if (folder / "done").is_file():
        return folder

    def write(index: int) -> None:
        label = index % CLASSES
        path = folder / f"class_{label}" / f"{index:06d}.jpg"
        if path.is_file():
            return
        rng = np.random.default_rng(index)
        height, width = (int(v) for v in rng.integers(SOURCE_PX * 3 // 4, SOURCE_PX * 5 // 4, 2))
        coarse = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
        coarse[..., label % 3] = 255 - coarse[..., label % 3] // 3  # the class's tint
        image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        noise = rng.integers(-20, 20, image.shape, dtype=np.int16)  # int16: no 1.5 MB arrays
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        partial = path.with_suffix(".part")  # whole files only, should the run be cut short
        encoded.tofile(partial)
        partial.rename(path)

    for label in range(CLASSES):
        (folder / f"class_{label}").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(write, range(count)))
    (folder / "done").touch()
    return folder


# ---------------------------------------------------------------------------------------------
# Decoding: the limit, and the cache build
# ---------------------------------------------------------------------------------------------


def decode_limit(paths: list[str], size: int) -> float:
    """Images per second of imdecode + resize alone, on all cores (files already read in; at
    most LIMIT_SAMPLE of them, spread over the folder)."""
    paths = paths[:: max(1, len(paths) // LIMIT_SAMPLE)]
    blobs = [np.fromfile(p, dtype=np.uint8) for p in paths]

    def one(blob: np.ndarray) -> None:
        image = cv2.imdecode(blob, cv2.IMREAD_COLOR)
        cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)

    started = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(one, blobs, chunksize=64))
    return len(paths) / (time.perf_counter() - started)


@dataclass
class Build:
    """A cache built from nothing: its seconds in all, and of them the listing of the folder and
    the cache's own work (stamping, decoding, writing and syncing every file); the rest is the
    split, mostly importing scikit-learn's model_selection (~1.5 s once per process)."""

    images: int
    seconds: float
    listing_s: float
    cache_s: float

    @property
    def rate(self) -> float:
        """Images per second of the cache's own work."""
        return self.images / self.cache_s


def cache_build(folder: Path, cache: Path, size: int) -> Build:
    """Build the cache of the whole folder from nothing, timing its parts."""
    shutil.rmtree(cache, ignore_errors=True)
    inside = 0.0
    build = data.cache.cached

    def timed(*args, **kwargs):  # the cache's own work, without the listing and the split
        nonlocal inside
        started = time.perf_counter()
        try:
            return build(*args, **kwargs)
        finally:
            inside += time.perf_counter() - started

    source = data.DataSource(
        "image_folder",
        str(folder),
        options={"image_size": size},
        keep_in="cache",
        cache_dir=str(cache),
    )
    data.cache.cached = timed
    try:
        started = time.perf_counter()
        dataset = source.read()
        listed = time.perf_counter()
        splits = source.split(dataset, "cache", say=None)
        seconds = time.perf_counter() - started
    finally:
        data.cache.cached = build
    total = len(splits.train_y) + len(splits.val_y) + len(splits.test_y)
    return Build(total, seconds, listed - started, inside)


# ---------------------------------------------------------------------------------------------
# A search, and the memory of its processes
# ---------------------------------------------------------------------------------------------


@dataclass
class SearchFigures:
    keep_in: str
    images: int
    seconds: float  # the whole `tuner run`, start to exit
    largest_private_mb: float  # the largest USS any process of the run reached
    largest_private_process: str
    driver_private_mb: float  # the largest USS of the driver (`tuner run`) itself
    driver_anonymous_mb: float  # ... of its heap alone
    trial_private_mb: float  # the largest USS of a trial worker (ray::ImplicitFunc.train)
    largest_anonymous_mb: float  # the largest heap (anonymous memory) of any process
    trial_anonymous_mb: float  # ... of a trial worker
    machine_peak_used_mb: float  # above what the machine used before the run
    trial_images_per_s: float  # mean over the trials: (train + val) / epoch_seconds
    load: str  # `uptime`'s load averages when it ended: other work on the machine


def private_mb(pid: int) -> tuple[float, float]:
    """(USS, anonymous) of a process in MB, (0, 0) for one gone. USS counts the pages only this
    process maps (psutil's ``uss``), file and shared-memory pages included while it is their
    only reader; anonymous counts its heap alone, where a private copy of the data would be."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0, 0.0
    fields = dict(line.split(":", 1) for line in text.splitlines()[1:])
    kb = lambda key: int(fields.get(key, "0 kB").split()[0])  # noqa: E731
    return (kb("Private_Clean") + kb("Private_Dirty")) / 1024, kb("Anonymous") / 1024


def used_mb() -> float:
    return _meminfo_mb("MemTotal") - available_mb()


def available_mb() -> float:
    return _meminfo_mb("MemAvailable")


def _meminfo_mb(key: str) -> float:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(info[key].split()[0]) / 1024


def tree(root: int) -> list[int]:
    """``root`` and every process below it (a local Ray's processes are the driver's)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue += children.get(pid, [])
    return found


def name_of(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return "?"
    return " ".join(words[:3])[:60]


def search(
    folder: Path, work: Path, keep_in: str, images: int, size: int, resolution: int
) -> SearchFigures:
    spec = work / f"{keep_in}_{images}.yaml"
    cache = work / "cache"
    spec.write_text(
        SPEC.format(
            keep_in=keep_in,
            images=images,
            root=folder,
            cache=cache,
            size=size,
            resolution=resolution,
        )
    )
    store = work / f"mlflow_{keep_in}_{images}.db"
    command = [
        sys.executable,
        "-m",
        "tuner",
        "run",
        str(spec),
        "--tracking-uri",
        f"sqlite:///{store}",
        "--storage",
        str(work / "ray"),
    ]
    baseline = used_mb()
    peak = dict.fromkeys(("uss", "used", "driver", "trial", "anon", "trial_anon"), 0.0)
    peak["driver_anon"] = 0.0
    peak["who"] = ""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(process.stdout), daemon=True)
    reader.start()
    while process.poll() is None:
        for pid in tree(process.pid):
            (private, anon), name = private_mb(pid), name_of(pid)
            if private > peak["uss"]:
                peak.update(uss=private, who=name)
            peak["anon"] = max(peak["anon"], anon)
            role = "driver" if pid == process.pid else "trial" if "ImplicitFunc" in name else ""
            if role:
                peak[role] = max(peak[role], private)
            if role:
                peak[f"{role}_anon"] = max(peak[f"{role}_anon"], anon)
        peak["used"] = max(peak["used"], used_mb() - baseline)
        time.sleep(SAMPLE_S)
    seconds = time.perf_counter() - started
    reader.join()
    (work / f"{keep_in}_{images}.log").write_text("".join(log))
    if process.returncode != 0:
        raise SystemExit(f"tuner run failed ({process.returncode}):\n{''.join(log[-30:])}")
    return SearchFigures(
        keep_in,
        images,
        round(seconds, 1),
        round(peak["uss"]),
        peak["who"],
        round(peak["driver"]),
        round(peak["driver_anon"]),
        round(peak["trial"]),
        round(peak["anon"]),
        round(peak["trial_anon"]),
        round(peak["used"]),
        round(trial_rate(work / "ray", f"scale_{keep_in}_{images}", images), 1),
        " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    )


def trial_rate(storage: Path, name: str, images: int) -> float:
    """Mean over the trials of (train + val images) / epoch_seconds, from Tune's results (of
    this run: a search of a name used before is kept in ``name-2``, ``name-3``, ...)."""
    seen = images * 0.8  # train + val: all but the 20% test split
    folders = [*storage.glob(f"{name}"), *storage.glob(f"{name}-*")]
    latest = max(folders, key=lambda folder: folder.stat().st_mtime)
    rates = [
        seen / json.loads(line)["epoch_seconds"]
        for result in latest.glob("*/result.json")
        for line in result.read_text().splitlines()[:1]
    ]
    return float(np.mean(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[4000, 24000])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_data_scale"))
    parser.add_argument("--keep-in", nargs="+", default=["memory", "cache"])
    parser.add_argument("--resolution", type=int, help="px the search trains at (default: size)")
    args = parser.parse_args()
    resolution = args.resolution or args.image_size
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for count in args.images:
        folder = photo_folder(args.work, count)
        paths = [str(p) for p in sorted(folder.rglob("*.jpg"))]
        # The limit before and after the build, averaged: other work on the machine drifts.
        before = decode_limit(paths, args.image_size)
        built = cache_build(folder, args.work / "cache", args.image_size)
        limit = (before + decode_limit(paths, args.image_size)) / 2
        print(
            f"{count:,} images at {args.image_size} px: decode limit {limit:,.0f}/s, cache "
            f"build {built.rate:,.0f}/s ({built.rate / limit:.0%} of the limit, "
            f"{built.cache_s:.1f} s); with the listing ({built.listing_s:.1f} s) and the split, "
            f"{built.images / built.seconds:,.0f}/s ({built.seconds:.1f} s)",
            flush=True,
        )
        row = {
            "images": count,
            "image_size": args.image_size,
            "resolution": resolution,
            "decode_limit_per_s": round(limit),
            "build_per_s": round(built.rate),
            "build_s": round(built.cache_s, 1),
            "listing_s": round(built.listing_s, 1),
            "load_s": round(built.seconds, 1),
            "searches": [],
        }
        for keep_in in args.keep_in:
            decoded = count * 3 * args.image_size**2
            if keep_in == "memory" and 2 * decoded > available_mb() * 1e6:
                print(f"memory: skipped, {decoded / 1e9:.1f} GB decoded can't be held twice")
                continue
            figures = search(folder, args.work, keep_in, count, args.image_size, resolution)
            print(json.dumps(asdict(figures)), flush=True)
            row["searches"].append(asdict(figures))
        results.append(row)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
