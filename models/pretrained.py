"""Starting from trained weights: a weights file read as tensors only, loaded where names and
shapes match, and the parts of a network fine-tuning treats apart (its blocks and its head).

A weights file never runs code: a ``.safetensors`` file, or a torch file read with
``torch.load(..., weights_only=True)`` (a bare state dict, or a checkpoint holding one under
``model`` or ``state_dict``: a tuner trial's ``checkpoint.pt`` is one). ``load_matching`` is how
every zoo model takes ``pretrained_file`` (``models.build``); a timm model loads through timm's
own loader, which reads files the same way (``models.timm_models``).

The blocks of a network, in forward order, are what ``finetune: {freeze, layer_decay}`` counts
(``tuner.trainables.recipe``): a timm model's own grouping (``group_matcher(coarse=True)``: stem,
stages, then neck and head), else its top-level children holding parameters, a container of
containers (``simple_cnn``'s ``features``, a ResNet's ``stages``) opened one level. The last
block holds the head.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from models.options import OptionError

CHECKPOINT_KEYS = ("model", "state_dict")  # where a checkpoint keeps its state dict


class WeightsError(OptionError):
    """A weights file that is missing, unsafe to read, or not for this model (one line)."""


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (see the module's docstring), on the CPU.

    Raises ``WeightsError`` (one line, naming the file) when it is missing or holds anything else.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"pretrained_file={str(path)!r} is not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # timm's dependency: comes with it

            state: object = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise WeightsError(
            f"pretrained_file={str(path)!r} is a safetensors file: pip install safetensors"
        ) from None
    except Exception as error:  # a pickled module, a truncated file: which file, one line
        raise WeightsError(
            f"pretrained_file={str(path)!r} is not a weights file: {_first_line(error)}"
        ) from None
    for key in CHECKPOINT_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    tensors = dict(state) if isinstance(state, Mapping) else {}
    if not tensors or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise WeightsError(f"pretrained_file={str(path)!r} holds no state dict of tensors")
    return tensors


def head_names(model: nn.Module) -> tuple[str, ...]:
    """The names of the module(s) that classify: timm's ``pretrained_cfg['classifier']``, else
    the last module holding parameters of its own (every zoo model's ``fc`` / ``head``)."""
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if classifier:
        return (classifier,) if isinstance(classifier, str) else tuple(classifier)
    holding = [name for name, module in model.named_modules() if _own_parameters(module)]
    return (holding[-1],) if holding else ()


def in_head(name: str, heads: tuple[str, ...]) -> bool:
    """Whether the parameter or buffer ``name`` belongs to one of the modules ``heads``."""
    return any(name.startswith(f"{head}.") for head in heads)


def load_matching(model: nn.Module, path: str | Path) -> int:
    """Load into ``model`` every tensor of the file at ``path`` whose name and shape match one
    of the model's, except its head's (the new task's head starts fresh). Returns how many
    were loaded; a file matching none is a ``WeightsError`` (it is for another network)."""
    own, heads = model.state_dict(), head_names(model)
    matching = {
        name: tensor
        for name, tensor in read_weights(path).items()
        if name in own and tensor.shape == own[name].shape and not in_head(name, heads)
    }
    if not any(tensor.is_floating_point() for tensor in matching.values()):
        raise WeightsError(
            f"pretrained_file={str(path)!r} has no weights of this model's (no tensor matches "
            f"one of its {len(own)} by name and shape, e.g. {next(iter(own), '-')!r}); "
            "was it saved from the same model and options?"
        )
    model.load_state_dict(matching, strict=False)
    return len(matching)


def blocks(model: nn.Module) -> list[list[tuple[str, nn.Parameter]]]:
    """The model's parameters in blocks, in forward order (see the module's docstring); the
    last block holds the head."""
    names = [name for name, _ in _block_modules(model)]
    grouped: dict[int, list[tuple[str, nn.Parameter]]] = {}
    matcher = getattr(model, "group_matcher", None)
    if callable(matcher):  # timm's grouping, as its layer-wise decay uses it
        from timm.models import group_parameters

        for index, members in group_parameters(model, matcher(coarse=True)).items():
            parameters = dict(model.named_parameters())
            grouped[index] = [(name, parameters[name]) for name in members]
    else:
        for name, parameter in model.named_parameters():
            # A parameter of the model itself (no block's): with the first block.
            index = next((i for i, block in enumerate(names) if _inside(name, block)), 0)
            grouped.setdefault(index, []).append((name, parameter))
    ordered = [grouped[index] for index in sorted(grouped)]
    heads = head_names(model)
    head = [p for block in ordered for p in block if in_head(p[0], heads)]
    body = [[p for p in block if not in_head(p[0], heads)] for block in ordered]
    return [block for block in body if block] + [head]


def _block_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, child in model.named_children():
        if not any(True for _ in child.parameters()):
            continue
        grandchildren = list(child.named_children())
        if isinstance(child, nn.Sequential | nn.ModuleList) and any(
            any(True for _ in grandchild.children()) for _, grandchild in grandchildren
        ):
            for inner, grandchild in grandchildren:
                if any(True for _ in grandchild.parameters()):
                    yield f"{name}.{inner}", grandchild
        else:
            yield name, child


def _inside(name: str, module: str) -> bool:
    return name.startswith(f"{module}.")


def _own_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]
