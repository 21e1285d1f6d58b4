"""The deep-learning trainable: one PyTorch training run per trial, reporting every epoch.

A trial's config (from the spec's space) is a ``TrialConfig``: every key optional, each section
checked at load time against the code that reads it (``check_space``).
"""

from __future__ import annotations

import itertools
import math
import pickle
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict, get_type_hints

import ray
import torch
from ray import tune
from torch import nn

import models
from data import DataSource, Splits, pages
from data.augment import CROP_PCT, Augmentation, CentreCrop, channel_stats, to_float
from models.options import POSITIVE, Range, Registry, option_types
from models.raw_image import RawImageClassifier
from models.timm_models import input_stats
from tuner.core.selection import final_value
from tuner.spec import space as space_lang
from tuner.tracking.tags import Status
from tuner.trainables import Settings, Validated
from tuner.trainables.checks import check_keys, check_metric, check_named, check_objectives
from tuner.trainables.node_data import splits_on_node
from tuner.trainables.recipe import Ema, Finetune, Tta, WithTta, optimizer_with_bias_group
from tuner.trainables.size import report_rejected, size_of, violation
from tuner.trainables.trial_report import ONCE, TrialReport

if TYPE_CHECKING:
    from ray.tune import Result

    from tuner.trainables.metrics import Evaluation

METRICS = ("val_acc", "val_loss", "train_acc", "train_loss")  # what a trial reports each epoch


class TrialConfig(TypedDict, total=False):
    """A trial's config: the keys a deep spec's space may set, each with its type."""

    model: Mapping[str, Any]  # {name: simple_cnn, <the model's options>} (models.build)
    # {freeze, head_lr_scale, layer_decay}: how a pretrained model trains on (recipe.Finetune)
    finetune: Mapping[str, Any]
    # {name: sgd | adam | ..., <the torch optimizer's options>, bias options (see recipe), sgd's
    # lr_per_examples}: optimizer_options
    optimizer: Mapping[str, Any]
    schedule: Mapping[str, Any]  # {name: constant | step | cosine | onecycle, ...}: SCHEDULES
    batch_size: Annotated[int, POSITIVE]  # images per step
    epochs: Annotated[int, POSITIVE]  # the trial's epoch budget (default: scheduler.max_epochs)
    label_smoothing: Annotated[float, Range(0, 1)]
    augment: Mapping[str, Any]  # {crop_scale, crop_padding, hflip, ...}: Augmentation
    # The side, pixels, of the images the model sees (it is built for it): training crops are
    # resized to it, evaluation's centre crop too. Default: the data's image size.
    resolution: Annotated[int, Range(8)]
    # Evaluation's centre crop, a fraction of the short side (timm's crop_pct). Default:
    # CROP_PCT after random resized crops (augment.crop_scale), else 1, the whole image.
    crop_pct: Annotated[float, Range(0, 1, low_open=True)]
    # training images a model's ``data_init`` sees (airbench's whitening), at most
    # DATA_INIT_PIXELS' worth at the trial's resolution; 0: none
    data_init: Annotated[int, Range(0)]
    ema: Mapping[str, Any]  # {decay, every}: val and test use a moving average (recipe.Ema)
    tta: Mapping[str, Any]  # {flip, translate}: val and test average logits over views (Tta)
    compile: bool  # torch.compile the training steps (on a GPU; CPU runs skip it)
    fault: Mapping[str, Any]  # fault injection, for testing recovery (see FaultInjection)


# Arguments of the torch optimizers that a spec doesn't set: the parameters (from the model),
# and switches of how an update is computed, not what it is (maximize would climb the loss).
TORCH_ONLY = ("params", "foreach", "fused", "capturable", "differentiable", "maximize")
OPTIMIZERS: Registry[type[torch.optim.Optimizer]] = Registry(
    "optimizer",
    {
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "adadelta": torch.optim.Adadelta,
        "rmsprop": torch.optim.RMSprop,
    },
    fixed=TORCH_ONLY,
)
CHECKPOINT_FILE = "checkpoint.pt"
# Pixels per forward pass when evaluating: no gradients, so large, but a pass's activations grow
# with its images' size: 1,024 CIFAR-sized images, 64 of 128 px (1,024 of those took 2 GB).
EVAL_PIXELS = 1024 * 32 * 32
DATA_INIT_IMAGES = 5000  # airbench's count: plenty for the statistics of 2x2 patches
# ... of 32 px images: larger ones give as many patches from fewer images, and the model's
# patch matrix (12 floats a pixel) stays ~250 MB at any resolution.
DATA_INIT_PIXELS = DATA_INIT_IMAGES * 32 * 32
LATENCY_RUNS = 5  # timed single-image predictions, after one to warm up; their median counts
# A trial's warnings travel in its next result (``warnings``), which the driver records and
# prints: a worker's stderr reaches the user only through Ray's log_to_driver, and is lost in
# CI, under nohup or `ray job submit`. Capped so a result stays small.
MAX_WARNINGS, MAX_WARNING_CHARS = 5, 500


# ---------------------------------------------------------------------------------------------
# Validation at load time
# ---------------------------------------------------------------------------------------------


def epochs(config: Mapping[str, Any], *, max_epochs: int) -> int:
    """A trial's epochs: the config's own ``epochs``, else the search's budget."""
    return int(config.get("epochs", max_epochs))


def check_space(tree: space_lang.Group, *, metric: str, objectives: Sequence[str] = ()) -> None:
    """Refuse unknown settings, names and values of the wrong type before Ray starts."""
    check_metric(metric, METRICS)
    check_objectives(objectives, ONCE)
    check_keys(tree, "", get_type_hints(TrialConfig, include_extras=True))
    check_named(tree, "model", models.MODELS)
    check_named(tree, "optimizer", OPTIMIZERS, optimizer_options)
    check_named(tree, "schedule", SCHEDULES, builds=True)
    sections = (("augment", Augmentation), ("ema", Ema), ("tta", Tta), ("finetune", Finetune))
    for key, section in sections:
        check_keys(tree, key, option_types(section), build=section)
    check_keys(tree, "fault", option_types(FaultInjection))


def optimizer_options(name: str) -> dict[str, Any]:
    """What ``optimizer: {name, ...}`` takes, read from what reads it (build_optimizer): the
    torch optimizer's own arguments, the bias group's, and for SGD the linear scaling rule's."""
    return {
        **OPTIMIZERS.option_types(name),
        **option_types(optimizer_with_bias_group),
        **(option_types(linear_scaling) if name == "sgd" else {}),
    }


# ---------------------------------------------------------------------------------------------
# Building the parts of a run from a config
# ---------------------------------------------------------------------------------------------


def options_of(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A section's settings without its branch ``name`` (``augment: {choice: {light: ...}}``)."""
    return {k: v for k, v in (config.get(key) or {}).items() if k != "name"}


def resolution(config: Mapping[str, Any], splits: Splits) -> int:
    """The side, pixels, of the images a trial's model sees: ``resolution``, else the data's."""
    return int(config.get("resolution", splits.image_size))


def build_model(config: Mapping[str, Any], splits: Splits) -> nn.Module:
    """The config's model for the splits, its ``finetune.freeze`` blocks frozen."""
    options = dict(config.get("model") or {"name": "simple_cnn"})
    model = models.build(
        options.pop("name", "simple_cnn"),
        num_classes=splits.num_classes,
        in_channels=splits.in_channels,
        image_size=resolution(config, splits),
        **options,
    )
    return Finetune(**options_of(config, "finetune")).frozen(model)


def build_optimizer(
    config: Mapping[str, Any], model: nn.Module, batch_size: int
) -> torch.optim.Optimizer:
    section = dict(config.get("optimizer") or {})
    name = section.pop("name", "adam")
    lr = float(section.pop("lr", 1.0 if name == "adadelta" else 1e-3))
    if "lr_per_examples" in section:
        lr = linear_scaling(lr, batch_size, lr_per_examples=float(section.pop("lr_per_examples")))
    if name == "sgd":
        section.setdefault("momentum", 0.9)
    scaled = Finetune(**options_of(config, "finetune")).scaled(model)  # per block, with its lr
    return optimizer_with_bias_group(OPTIMIZERS[name], model, scaled, lr=lr, **section)


def linear_scaling(lr: float, batch_size: int, /, *, lr_per_examples: float) -> float:
    """SGD's learning rate per step for ``lr`` per ``lr_per_examples`` examples.

    Each step's rate grows with the batch (the linear scaling rule, Goyal et al. 2017; airbench
    sums its loss over the batch, the same thing), a rule for SGD, not for adaptive optimizers.
    Weight decay follows by itself: SGD takes lr * weight_decay off per step. airbench's
    'lr': 11.5 per 1024 also divides out Nesterov momentum's gain, 1 + 1 / (1 - momentum): its
    momentum 0.85 makes that lr 1.5 here, and its weight decay 0.0153 (per 1024 examples,
    decoupled from lr) weight_decay 0.0153 / 11.5.
    """
    return lr * batch_size / lr_per_examples


@dataclass(frozen=True)
class Schedule:
    """``schedule: {name: constant}``: the learning-rate multiplier at a (fractional) epoch, a
    constant 1 after a linear warm-up; each other schedule is a subclass with its own options."""

    warmup_epochs: float = 0  # epochs of linear warm-up from ~0

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")

    def lr_factor(self, epoch: float, epochs: int) -> float:
        """The schedule's multiplier times its warm-up's."""
        factor = self.factor(epoch, min(epoch / max(epochs, 1), 1.0))
        if self.warmup_epochs > 0 and epoch < self.warmup_epochs:
            factor *= (epoch + 1e-3) / self.warmup_epochs
        return factor

    def factor(self, epoch: float, progress: float) -> float:
        """The multiplier at ``epoch``, ``progress`` (0..1) through the trial's epochs."""
        return 1.0


@dataclass(frozen=True)
class StepSchedule(Schedule):
    """``{name: step}``: the rate times ``gamma`` every ``step_size`` epochs."""

    step_size: float = 10  # epochs
    gamma: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.step_size > 0 and self.gamma > 0):
            raise ValueError(f"step_size and gamma must be > 0, got {self.step_size}, {self.gamma}")

    def factor(self, epoch: float, progress: float) -> float:
        return self.gamma ** math.floor(epoch / self.step_size)


@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """``{name: cosine}``: half a cosine from 1 down to 0 over the trial's epochs."""

    def factor(self, epoch: float, progress: float) -> float:
        return 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class OneCycleSchedule(Schedule):
    """``{name: onecycle}``: up for the first 30% of training, then a cosine down to ~0 (Smith
    & Topin, 2017)."""

    def factor(self, epoch: float, progress: float) -> float:
        peak = 0.3
        if progress < peak:
            return 0.04 + 0.96 * progress / peak
        return 0.5 * (1 + math.cos(math.pi * (progress - peak) / (1 - peak)))


SCHEDULES: Registry[type[Schedule]] = Registry(
    "schedule",
    {
        "constant": Schedule,
        "step": StepSchedule,
        "cosine": CosineSchedule,
        "onecycle": OneCycleSchedule,
    },
)


def lr_factor(schedule: Mapping[str, Any], epoch: float, epochs: int) -> float:
    """The learning-rate multiplier at a (fractional) epoch of a ``schedule:`` section."""
    options = dict(schedule)
    return SCHEDULES[options.pop("name", "constant")](**options).lr_factor(epoch, epochs)


# The most of a GPU's free memory a trial's train and val images may take there (the rest is
# for the model, its activations and other trials sharing the GPU); larger splits stay where
# they lie and go to the GPU a batch at a time.
DEVICE_DATA_FRACTION = 0.25
# Gather the next batch in a background thread while this one trains, for splits not on the
# trial's device (to a GPU). Not on the CPU: there a sorted batch's gather is 1-3% of a small
# CNN's step at 64-128 px, even from a memory-mapped file, and on a quiet 2-core machine the
# thread gained nothing. (On a busy one it seemed to: 1.4-3.5x with 2 torch threads; but that
# was OpenMP's spin-waiting, which the thread happened to disturb: with OMP_WAIT_POLICY=PASSIVE
# the batches ran as fast with or without it.)
PREFETCH_ON_CPU = False


@dataclass(frozen=True)
class DeviceData:
    """A trial's train and val splits as it reads them: labels on its device, and images there
    too when they fit comfortably (``fits_on``: the fastest path on a GPU), else where they lie
    (host memory, a memory-mapped cache), moved one batch at a time (``batches``). On the CPU
    nothing is copied: ``.to("cpu")`` is the splits' own tensors."""

    splits: Splits  # what they were read from
    device: torch.device
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    mean: torch.Tensor
    std: torch.Tensor


ON_DEVICE: list[DeviceData] = []  # this worker's copy (one entry: Tune reuses the worker)


def on_device(splits: Splits, device: torch.device) -> DeviceData:
    """The splits placed for ``device``, once per worker process: a reused worker (Tune's
    ``reuse_actors``) gets the same ``Splits`` object for every trial, so the placing is kept."""
    if ON_DEVICE and ON_DEVICE[0].splits is splits and ON_DEVICE[0].device == device:
        return ON_DEVICE[0]
    mean, std = (t.to(device) for t in channel_stats(splits.train_x))  # chunked: no float copy
    whole = fits_on(device, splits.train_x.nbytes + splits.val_x.nbytes)
    copy = DeviceData(
        splits,
        device,
        train=(splits.train_x.to(device) if whole else splits.train_x, splits.train_y.to(device)),
        val=(splits.val_x.to(device) if whole else splits.val_x, splits.val_y.to(device)),
        mean=mean,
        std=std,
    )
    ON_DEVICE[:] = [copy]
    return copy


def fits_on(device: torch.device, nbytes: int, free: int | None = None) -> bool:
    """Whether ``nbytes`` of images go whole to ``device``: on the CPU always (they are there
    already, nothing is copied); on a GPU up to DEVICE_DATA_FRACTION of its ``free`` memory
    (default: what CUDA reports now), so that one memory-mapped split too large for it, or
    several trials' copies, never fill it; on other accelerators never."""
    if device.type == "cpu":
        return True
    if device.type != "cuda":
        return False
    if free is None:
        free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_DATA_FRACTION * free


def fetch(x: torch.Tensor, index: torch.Tensor | slice, device: torch.device) -> torch.Tensor:
    """The uint8 images ``x[index]`` on ``device``: indexed there when ``x`` is on it already;
    else gathered where ``x`` lies (a memory-mapped file reads only these images' pages) into
    pinned memory, and sent to the GPU without waiting for the copy (``non_blocking``)."""
    if x.device == device:
        return x[index if isinstance(index, slice) else index.to(device)]
    pinned = device.type == "cuda"
    if isinstance(index, slice):
        part = x[index]  # a view: the copy into pinned memory reads it once
        return part.pin_memory().to(device, non_blocking=True) if pinned else part.to(device)
    index = index.cpu()
    out = torch.empty((len(index), *x.shape[1:]), dtype=x.dtype, pin_memory=pinned)
    torch.index_select(x, 0, index, out=out)
    return out.to(device, non_blocking=pinned)


def batches(
    x: torch.Tensor, parts: Sequence[torch.Tensor | slice], device: torch.device
) -> Iterator[torch.Tensor]:
    """``fetch`` of each of ``parts`` in turn; for images not on ``device`` the next is gathered
    in one background thread while the caller works on this one (torch's indexing and copies
    release the GIL). ``parts`` are fixed beforehand, so the thread draws no random numbers."""
    prefetch = x.device != device or (device.type == "cpu" and PREFETCH_ON_CPU)
    # Each part, once used, is unmapped from this process where the images are a shared
    # mapping (a cache's memory map, Ray's object store): a pass keeps no split's pages.
    if not prefetch or len(parts) < 2:  # one part (a latency probe): nothing to overlap
        for part in parts:
            yield fetch(x, part, device)
            pages.forget_rows(x, part)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuner-batches") as pool:
        ahead = pool.submit(fetch, x, parts[0], device)
        for part, following in itertools.pairwise(parts):
            current, ahead = ahead, pool.submit(fetch, x, following, device)
            yield current.result()
            pages.forget_rows(x, part)
        yield ahead.result()
        pages.forget_rows(x, parts[-1])


def eval_batch(x: torch.Tensor) -> int:
    """Images per evaluation pass for images like those of ``x`` (N, C, H, W)."""
    return max(1, EVAL_PIXELS // (x.shape[-1] * x.shape[-2]))


def epoch_order(n: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A random order of ``n`` training images, each batch's slice of it sorted: a batch is a
    set, and sorted it reads a memory-mapped split in file order (fewer, longer page reads)."""
    order = torch.randperm(n, generator=generator)
    whole = n - n % batch_size  # the full batches, sorted row by row; then the last one
    head = order[:whole].view(-1, batch_size).sort(dim=1).values.flatten()
    return torch.cat([head, order[whole:].sort().values])


def pick_device() -> torch.device:
    # Ray sets CUDA_VISIBLE_DEVICES to the GPUs it assigned to this trial, so "cuda" here is
    # the assigned GPU, never device 0 of the machine blindly.
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype(device: torch.device, capability: tuple[int, int] | None = None) -> torch.dtype:
    """What autocast computes in: float32 on CPU; bf16 on a GPU with it in hardware (compute
    capability 8.0+, Ampere on), else fp16 with a GradScaler. ``torch.cuda.is_bf16_supported()``
    is no guide: it is true on older GPUs too, where bf16 is emulated and slow."""
    if device.type != "cuda":
        return torch.float32
    major_minor = capability or torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major_minor >= (8, 0) else torch.float16


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint read onto the CPU, whatever device wrote it: a CPU driver reads a GPU
    trial's, and ``load_state`` copies each tensor to where its module lives (the generator's
    state must stay a CPU tensor, so it can't all go to the trial's device here)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def use_assigned_cpus() -> None:
    """Use as many torch threads as CPUs Ray gave this trial: no oversubscription."""
    if ray.is_initialized():
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


class TrainingRun:
    """The state of one training run: model, optimizer, data on the device, epoch counter."""

    def __init__(self, config: Mapping[str, Any], splits: Splits, settings: Settings) -> None:
        torch.manual_seed(settings.seed)
        self.device = pick_device()
        self.config = config
        self.epochs = epochs(config, max_epochs=settings.max_epochs)
        self.batch_size = int(config.get("batch_size", 64))
        self.schedule = dict(config.get("schedule") or {})
        self.augment = Augmentation(**options_of(config, "augment"))
        self.ema = Ema(**options_of(config, "ema"))
        self.tta = Tta(**options_of(config, "tta"))
        device_data = on_device(splits, self.device)
        self.mean, self.std = device_data.mean, device_data.std
        self.data = {"train": device_data.train, "val": device_data.val}
        # What the model sees: training crops at this side, evaluation the centre crop at it.
        self.resolution = resolution(config, splits)
        crop_pct = CROP_PCT if self.augment.crop_scale is not None else 1.0
        self.view = CentreCrop(self.resolution, float(config.get("crop_pct", crop_pct)))
        self.model = build_model(config, splits).to(self.device)
        if (stats := input_stats(self.model)) is not None:  # a pretrained timm model's own
            self.mean, self.std = (t.to(self.device) for t in stats)
        self._data_init(int(config.get("data_init", DATA_INIT_IMAGES)))
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        # A copy made now starts from the initialised weights; None without `ema`.
        self.averaged = self.ema.average(self.model)
        # torch.compile, opt-in and on a GPU only: it pays where fused kernels outweigh a
        # compile of tens of seconds (for airbench on an H200 it didn't: 39 s to compile, then
        # 0.36 s an epoch of CIFAR-sized images against 0.31 s eager); on CPU it never would
        # for these models. The wrapper shares the model's weights; evaluation runs eagerly.
        compiled = bool(config.get("compile", False)) and self.device.type == "cuda"
        self.train_model = torch.compile(self.model) if compiled else self.model
        self.optimizer = build_optimizer(config, self.model, self.batch_size)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.dtype = compute_dtype(self.device)
        # fp16's narrow range underflows small gradients: scale the loss (bf16 doesn't need it).
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.loss_fn = nn.CrossEntropyLoss(
            label_smoothing=float(config.get("label_smoothing", 0.0))
        )
        self.generator = torch.Generator(device="cpu").manual_seed(settings.seed)
        self.epoch = 0
        self.settings = settings
        self.diverged = False  # a NaN or inf training loss: the run can't go on
        self.warnings: list[str] = []  # not reported yet; see ``warn``

    def warn(self, message: str) -> None:
        """Warn here (a worker's log) and queue the message for the next reported result."""
        warnings.warn(message, stacklevel=2)
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message[:MAX_WARNING_CHARS])

    def report(self, metrics: dict[str, float], **fields: Any) -> TrialReport:
        """This epoch's report of ``metrics``, with the warnings not reported yet (cleared)."""
        queued, self.warnings = tuple(self.warnings), []
        return TrialReport(metrics, epochs=self.epochs, warnings=queued, **fields)

    def _data_init(self, images: int) -> None:
        """Let a model with ``data_init`` (airbench's whitening) set itself from the first
        ``images`` training images (at most DATA_INIT_PIXELS' worth), normalised, not augmented
        (the split is shuffled). A resumed trial's checkpoint then overwrites what it set, as
        it should."""
        if images <= 0 or not hasattr(self.model, "data_init"):
            return
        x = self.data["train"][0]
        images = min(images, len(x), max(1, DATA_INIT_PIXELS // self.resolution**2))
        parts = [slice(s, min(s + eval_batch(x), images)) for s in range(0, images, eval_batch(x))]
        # Converted a pass at a time, to the resolution trained at: no float copy of the
        # images at their stored size.
        self.model.data_init(torch.cat([self._inputs(b) for b in batches(x, parts, self.device)]))

    @property
    def eval_model(self) -> nn.Module:
        """What validation and test evaluate: the weights' moving average, else the model."""
        return self.model if self.averaged is None else self.averaged.module

    def _inputs(self, x_uint8: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised float images on the device at the trial's resolution: a training batch
        (``index``: the images' positions in the training set) augmented, others the centre
        crop (``view``; the images as they are at the data's own size)."""
        x = to_float(x_uint8, self.mean, self.std)
        if index is None:
            x = self.view(x)
        else:
            x = self.augment(x, self.generator, index=index, epoch=self.epoch, size=self.resolution)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _autocast(self) -> Any:
        return torch.autocast(
            self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32
        )

    def train_epoch(self) -> tuple[float, float]:
        """One pass over the training data; returns (mean loss, accuracy)."""
        self.model.train()
        x_all, y_all = self.data["train"]
        # The epoch's indices, sent to the device once (the labels' and augmentation's, and the
        # images' when they are there); images elsewhere are gathered where they lie.
        order = epoch_order(len(y_all), self.batch_size, self.generator)
        order_here = order.to(self.device)
        where = order_here if x_all.device == self.device else order
        images = batches(x_all, where.split(self.batch_size), self.device)  # uint8, on device
        steps = max(1, math.ceil(len(order) / self.batch_size))
        # Summed on the device: reading a number back every step would wait for the GPU.
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for step in range(steps):
            factor = lr_factor(self.schedule, self.epoch + step / steps, self.epochs)
            for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                group["lr"] = base_lr * factor
            index = order_here[step * self.batch_size : (step + 1) * self.batch_size]
            x, y = self._inputs(next(images), index), y_all[index]
            with self._autocast():
                logits = self.train_model(x)
                loss = self.loss_fn(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()  # without fp16, these three are plain steps
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.averaged is not None and (self.epoch * steps + step + 1) % self.ema.every == 0:
                self.averaged.update_parameters(self.model)
            total_loss += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
        self.epoch += 1
        return float(total_loss) / len(order), int(correct) / len(order)

    @torch.no_grad()
    def predict(self, x_all: torch.Tensor) -> torch.Tensor:
        """float32 logits of the evaluated model (with ``tta``'s views) for uint8 images, in
        large batches, on the trial's device: validation and test both come through here."""
        model = self.eval_model.eval()
        chunks = []
        step = eval_batch(x_all)
        parts = [slice(start, start + step) for start in range(0, len(x_all), step)]
        for x_uint8 in batches(x_all, parts, self.device):
            x = self._inputs(x_uint8)
            with self._autocast():
                chunks.append(self.tta(model, x))
        return torch.cat(chunks)

    def latency_ms(self) -> float:
        """Milliseconds to classify one image on the trial's device (with ``tta``'s views, as
        the exported model does): the median of LATENCY_RUNS, read back to the CPU, so a GPU's
        queue is included. Weights don't change it, so it is measured once, untrained."""
        image = self.data["val"][0][:1]
        self.predict(image)  # the first call allocates: not counted
        times = []
        for _ in range(LATENCY_RUNS):
            started = time.perf_counter()
            self.predict(image).argmax(1).cpu()
            times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    def train_and_validate(self) -> dict[str, float]:
        """One epoch trained, then scored on the validation split: the metrics a trial
        reports. A diverged epoch sets ``diverged`` and is not
        scored: its metrics are the worst, so a searcher learns to avoid the config."""
        train_loss, train_acc = self.train_epoch()
        if not math.isfinite(train_loss):
            self.diverged = True
            return {
                "train_loss": math.inf,
                "train_acc": train_acc,
                "val_loss": math.inf,
                "val_acc": 0.0,
            }
        val_loss, val_acc = self.evaluate("val")  # its float()s wait for the device
        metrics = {
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        return metrics

    def evaluate(self, split: str) -> tuple[float, float]:
        x, y = self.data[split]
        logits = self.predict(x)
        return float(self.loss_fn(logits, y)), float((logits.argmax(1) == y).float().mean())

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds: the run as it is after its latest epoch, which is also what
        the test evaluates (the trial is chosen by its last epochs: tuner.core.selection)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "generator": self.generator.get_state(),
            "ema": None if self.averaged is None else self.averaged.state_dict(),
            "scaler": self.scaler.state_dict(),  # {} unless fp16
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        # A checkpoint written before tuner.core.selection also holds best_value and best_weights
        # (the best epoch's): nothing reads them now.
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.generator.set_state(state["generator"])
        if self.averaged is not None:
            self.averaged.load_state_dict(state["ema"])
        if state.get("scaler") and self.scaler.is_enabled():  # fp16 to fp16: bf16 has no scale
            self.scaler.load_state_dict(state["scaler"])


def train(config: dict[str, Any], *, splits: Splits | DataSource, settings: Settings) -> None:
    """The Ray Tune function trainable: train, report metrics and a checkpoint every epoch."""
    splits = splits_on_node(splits)
    use_assigned_cpus()
    try:
        _train(config, splits, settings)
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        # Recorded as the trial's error (tuner.error), with what to change; the search goes on.
        raise MemoryError(
            f"out of memory with model {config.get('model')} and batch_size "
            f"{config.get('batch_size', 64)}: use a smaller model or batch, or fewer trials per "
            f"GPU ({str(error).splitlines()[0][:200]})"
        ) from None


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator failing (a RuntimeError from torch)."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in text


def _train(config: dict[str, Any], splits: Splits, settings: Settings) -> None:
    trial = TrainingRun(config, splits, settings)
    size = size_of(trial.model)
    costs = {**size.metrics, "latency_ms": trial.latency_ms()}  # ONCE: known before training
    if reason := violation(size, settings):
        report_rejected(reason, settings, costs)
        return
    resumed = restore(trial, tune.get_checkpoint())
    fault = FaultInjection(**options_of(config, "fault"))
    while trial.epoch < trial.epochs:
        fault.maybe_raise(trial.epoch + 1, resumed)
        started = time.perf_counter()
        metrics = trial.train_and_validate() | costs
        if trial.diverged:  # the trial ends here
            tune.report(trial.report(metrics, ending=Status.DIVERGED).result())
            return
        epoch_seconds = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as directory:
            saving = time.perf_counter()
            torch.save(trial.state(), Path(directory) / CHECKPOINT_FILE)
            seconds = {
                "epoch_seconds": epoch_seconds,
                "checkpoint_seconds": time.perf_counter() - saving,
            }
            node_id = ray.get_runtime_context().get_node_id()
            report = trial.report(metrics, node_id=node_id, seconds=seconds)
            tune.report(report.result(), checkpoint=tune.Checkpoint.from_directory(directory))


def restore(trial: TrainingRun, checkpoint: tune.Checkpoint | None) -> bool:
    """Continue from a checkpoint; one that can't be read is reported and training restarts."""
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as directory:
        path = Path(directory) / CHECKPOINT_FILE
        try:
            trial.load_state(load_checkpoint(path))
        except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as error:
            trial.warn(f"checkpoint {path} can't be read ({error}); training from scratch")
            return False
    return True


@dataclass(frozen=True)
class FaultInjection:
    """``fault: {epoch: N}`` in a config raises at epoch N, to exercise recovery for real.

    By default it fails only in a trial's first attempt, so a retry from the last checkpoint
    goes on; ``repeat: true`` fails every attempt, until the trial is recorded as errored.
    """

    epoch: int = 0
    repeat: bool = False

    def maybe_raise(self, epoch: int, resumed: bool) -> None:
        if epoch == self.epoch and (self.repeat or not resumed):
            raise RuntimeError(f"injected fault at epoch {epoch}")


def evaluate_test(result: Result, *, splits: Splits, settings: Settings) -> Evaluation:
    """The best trial's latest checkpoint (its last epoch: the one its final value ends on),
    evaluated once on the held-out test split."""
    trial = TrainingRun(result.config, splits, settings)
    with result.checkpoint.as_directory() as directory:
        trial.load_state(load_checkpoint(Path(directory) / CHECKPOINT_FILE))
    return _test(trial, splits)


def retrain_and_test(
    config: Mapping[str, Any], *, splits: Splits, settings: Settings
) -> Evaluation:
    """``final.retrain``: the config trained afresh on train+val for its whole epoch budget
    (nothing is left to select an epoch on), then its last epoch tested once."""
    use_assigned_cpus()
    trial = TrainingRun(config, splits.with_val_in_train(), settings)
    while trial.epoch < trial.epochs:
        loss, _ = trial.train_epoch()
        if not math.isfinite(loss):
            warnings.warn(
                f"retraining diverged at epoch {trial.epoch}; testing it as is", stacklevel=1
            )
            break
    return _test(trial, splits)


def validate(config: Mapping[str, Any], *, splits: Splits, settings: Settings) -> Validated:
    """``final.repeats``: the config trained again for its whole epoch budget, as a trial
    trains it (no early stop): its final validation value and last epoch's weights."""
    use_assigned_cpus()
    trial = TrainingRun(config, splits, settings)
    history = []
    while trial.epoch < trial.epochs and not trial.diverged:
        history.append(trial.train_and_validate()[settings.metric])
    value = final_value(history)
    weights = {k: v.detach().cpu().clone() for k, v in trial.eval_model.state_dict().items()}
    return Validated(settings.worst if math.isnan(value) else value, weights)


def test_validated(
    config: Mapping[str, Any], validated: Validated, *, splits: Splits, settings: Settings
) -> Evaluation:
    """The weights ``validate`` kept, evaluated once on the test split."""
    return _test_weights(config, validated.model, splits, settings)


def _test_weights(
    config: Mapping[str, Any],
    weights: Mapping[str, torch.Tensor],
    splits: Splits,
    settings: Settings,
) -> Evaluation:
    """``config``'s evaluated model with ``weights`` (``validate``'s last epoch's), tested
    once."""
    trial = TrainingRun(config, splits, settings)
    trial.eval_model.load_state_dict(weights)
    return _test(trial, splits)


def _test(trial: TrainingRun, splits: Splits) -> Evaluation:
    # Imported here: scikit-learn's metrics take ~1 s to import, and trial workers never test.
    from tuner.trainables.metrics import Evaluation

    logits = trial.predict(splits.test_x)
    network = trial.eval_model.cpu().eval()
    if trial.tta.enabled:
        network = WithTta(network, trial.tta)
    if not trial.view.is_identity(*splits.test_x.shape[-2:]):
        # Served images come at the data's size: the model takes the view evaluation took.
        network = nn.Sequential(trial.view.cpu(), network)
    model = RawImageClassifier(network, trial.mean.cpu(), trial.std.cpu())
    return Evaluation(splits.test_y.numpy(), logits.argmax(1).cpu().numpy(), splits.classes, model)
