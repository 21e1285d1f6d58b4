"""Images per second of the two ways to feed augmented CIFAR-sized images to a model.

(a) batched: the uint8 dataset is one tensor in memory; each batch of 256 is gathered by index,
    normalised (data.augment.to_float) and augmented as a batch (data.augment.Augmentation).
(b) torchvision: a Dataset turns each image into a PIL image and runs the usual per-image
    transforms; a DataLoader batches them, with 0 and then 2 worker processes.

Both apply crop (4 px padding), horizontal flip, rotation (up to 10 degrees) and random erasing
(p = 0.25), and both make the same number of batches of the same shape. The images are real:
Fashion-MNIST (Debian's copy) or scikit-learn's digits, resized to 32x32 and given three
different channels; nothing is downloaded.

    python bench/bench_data_path.py --images 20000
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import data
from data.augment import Augmentation, channel_stats, to_float

SETTINGS = {
    "batch_size": 256,  # images per batch, both paths
    "image_size": 32,  # pixels (CIFAR-10's size)
    "crop_padding": 4,  # pixels
    "rotation": 10.0,  # degrees, maximum
    "erasing": 0.25,  # probability per image
}


# ---------------------------------------------------------------------------------------------
# Data: real images as a CIFAR-shaped uint8 array
# ---------------------------------------------------------------------------------------------


def cifar_like_images(count: int) -> np.ndarray:
    """``count`` real images as uint8 (N, 3, 32, 32): Fashion-MNIST if installed, else digits."""
    try:
        splits = data.load("fashion_mnist", max_train=min(count, 50_000), max_test=100)
    except data.DatasetError:
        splits = data.load("digits")
    grey = torch.cat([splits.train_x, splits.val_x]).numpy()[:, 0]
    size = SETTINGS["image_size"]
    grey = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in grey])
    colour = np.stack([grey, 255 - grey, grey // 2], axis=1)  # three different channels
    return np.resize(colour, (count, *colour.shape[1:]))  # repeats the images to fill ``count``


# ---------------------------------------------------------------------------------------------
# (a) The batched path
# ---------------------------------------------------------------------------------------------


def batched_epoch(
    x: torch.Tensor, augment: Augmentation, mean: torch.Tensor, std: torch.Tensor
) -> Iterable[torch.Tensor]:
    """One shuffled epoch of normalised, augmented float batches, as a trainer makes them."""
    order = torch.randperm(len(x), device=x.device)
    for index in order.split(SETTINGS["batch_size"]):
        yield augment(to_float(x[index], mean, std))


# ---------------------------------------------------------------------------------------------
# (b) torchvision's per-image PIL path
# ---------------------------------------------------------------------------------------------


class PilDataset(Dataset):
    """Each item: the uint8 image as a PIL image, through torchvision's transforms."""

    def __init__(self, images: np.ndarray, transform: transforms.Compose) -> None:
        self.images = images.transpose(0, 2, 3, 1)  # PIL wants (H, W, C)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(Image.fromarray(self.images[index]))


def torchvision_transform(mean: torch.Tensor, std: torch.Tensor) -> transforms.Compose:
    """The usual CIFAR training transforms, with the same settings as the batched path."""
    return transforms.Compose(
        [
            transforms.RandomCrop(SETTINGS["image_size"], padding=SETTINGS["crop_padding"]),
            transforms.RandomHorizontalFlip(),
            transforms.RandomRotation(SETTINGS["rotation"]),
            transforms.ToTensor(),
            transforms.Normalize(mean.tolist(), std.tolist()),
            transforms.RandomErasing(SETTINGS["erasing"]),
        ]
    )


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """One pass over a data path: wall-clock seconds, CPU seconds (all processes), images."""

    wall: float
    cpu: float
    images: int


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (DataLoader workers), seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_epoch(batches: Iterable[torch.Tensor], device: torch.device) -> Timing:
    """Time one pass over ``batches``, worker start-up included (as in every epoch)."""
    wall, cpu, seen = time.perf_counter(), cpu_seconds(), 0
    for batch in batches:
        seen += len(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    # An exhausted DataLoader iterator has joined its workers, so their CPU time is counted.
    return Timing(time.perf_counter() - wall, cpu_seconds() - cpu, seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000, help="images per epoch")
    parser.add_argument("--workers", default="0,2", help="DataLoader worker counts to try")
    parser.add_argument("--device", default="cpu", help="device of the batched path")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the batched path (1: one core, as one DataLoader worker has)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    images = cifar_like_images(args.images)
    x = torch.from_numpy(images)
    mean, std = channel_stats(x)
    augment = Augmentation(
        crop_padding=SETTINGS["crop_padding"],
        hflip=True,
        rotation=SETTINGS["rotation"],
        erasing=SETTINGS["erasing"],
    )
    print(
        f"{args.images} images of {tuple(images.shape[1:])}, batches of {SETTINGS['batch_size']}, "
        f"torch threads {torch.get_num_threads()}, batched path on {device}"
    )

    rows: list[tuple[str, str, Timing]] = []
    x_dev, mean_dev, std_dev = x.to(device), mean.to(device), std.to(device)
    for _ in batched_epoch(x_dev[:512], augment, mean_dev, std_dev):  # warm-up (allocator, CUDA)
        pass
    epoch = batched_epoch(x_dev, augment, mean_dev, std_dev)
    rows.append(("batched tensors", "-", time_epoch(epoch, device)))

    dataset = PilDataset(images, torchvision_transform(mean, std))
    for workers in (int(w) for w in args.workers.split(",")):
        loader = iter(
            DataLoader(
                dataset, batch_size=SETTINGS["batch_size"], shuffle=True, num_workers=workers
            )
        )
        rows.append(("torchvision PIL", str(workers), time_epoch(loader, torch.device("cpu"))))
    report(rows)


def report(rows: list[tuple[str, str, Timing]]) -> None:
    """The table, and how many times faster the batched path (first row) is than the others."""
    # Images per CPU-second is the steadier number on a shared machine: it doesn't count the
    # time other programs hold the cores.
    wall_rate = [t.images / t.wall for _, _, t in rows]
    cpu_rate = [t.images / t.cpu for _, _, t in rows]
    print(
        f"\n{'path':<17}{'workers':>8}{'wall s':>8}{'images/s':>10}{'x':>7}"
        f"{'CPU s':>8}{'images/CPU-s':>14}{'x':>7}"
    )
    for (name, workers, t), wall, cpu in zip(rows, wall_rate, cpu_rate, strict=True):
        print(
            f"{name:<17}{workers:>8}{t.wall:>8.2f}{wall:>10,.0f}{wall_rate[0] / wall:>6.1f}x"
            f"{t.cpu:>8.2f}{cpu:>14,.0f}{cpu_rate[0] / cpu:>6.1f}x"
        )
    print(
        f"\nbatched / best torchvision: {wall_rate[0] / max(wall_rate[1:]):.1f}x in images/s, "
        f"{cpu_rate[0] / max(cpu_rate[1:]):.1f}x in images per CPU-second"
    )


if __name__ == "__main__":
    main()
