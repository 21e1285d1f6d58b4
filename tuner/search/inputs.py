"""What every trial of a spec needs besides its config: its data and its settings."""

from __future__ import annotations

import data
from tuner.core.errors import UsageError
from tuner.core.terminal import say
from tuner.spec import space as space_lang
from tuner.spec.document import Spec
from tuner.trainables import Settings
from tuner.trainables.node_data import InMemory, splits_on_node


def trial_settings(spec: Spec, *, progress_bars: bool = False) -> Settings:
    """What every trial of ``spec`` needs besides its config (the one place they are read)."""
    return Settings(
        max_epochs=spec.scheduler.max_epochs,
        seed=spec.search.seed,
        metric=spec.metric,
        mode=spec.mode,
        cache_dir=data.anchored_path(spec.cache_dir),  # `~`: each node's own disk and home
        max_params=spec.constraints.max_params,
        max_model_mb=spec.constraints.max_model_mb,
        progress_bars=progress_bars,
    )


def load_data(spec: Spec) -> data.Splits:
    """The spec's dataset, split; a missing or malformed one is a UsageError (exit 2).

    Image files are decoded here, into memory or into this node's cache (``data.keep_in``),
    and one line says which and why: the search's first.
    """
    source = data_source(spec)
    try:
        dataset = source.read()
        placement = source.placement(dataset)
        if isinstance(dataset, data.ImageFiles):  # small decoded data has no choice to tell
            say(f"data: {placement.reason}")
        return source.split(dataset, placement.where, say=say)
    except data.DatasetError as error:
        raise UsageError(f"data: {error}") from None
    except TypeError as error:  # an option the loader doesn't take
        raise UsageError(f"data.options: {error}") from None


def shared_data(splits: data.Splits) -> tuple[InMemory | data.DataSource, data.Splits]:
    """What every trial is sent to get the search's data, and the driver's own splits after.

    Splits in this node's cache go as their source: each trial's node opens its own cache
    (building it once), and nothing large passes through the driver. Splits in memory are put
    in Ray's object store once; the driver then reads them back zero-copy, as every worker
    does, and its private copy goes. Needs Ray started.
    """
    source = data.cached_source(splits)
    if source is not None:
        return source, splits
    sent = InMemory.put(splits)
    return sent, splits_on_node(sent)


# Model options naming a local file, read inside trials (a timm model's `pretrained` is a switch:
# anchoring leaves a bool as it is).
PATH_PARAMS = ("pretrained", "pretrained_file")


def anchored_space(group: space_lang.Group) -> space_lang.Group:
    """``group`` with every ``pretrained`` / ``pretrained_file`` path (a constant, or each option
    of a choice) made absolute from here: trials run in their own directories."""
    children: dict[str, space_lang.Node] = {}
    for key, node in group.children.items():
        if isinstance(node, space_lang.Group):
            node = anchored_space(node)
        elif isinstance(node, space_lang.Branches):
            node = space_lang.Branches({k: anchored_space(g) for k, g in node.options.items()})
        elif key in PATH_PARAMS and isinstance(node, space_lang.Const):
            node = space_lang.Const(data.anchored_path(node.value))
        elif key in PATH_PARAMS and isinstance(node, space_lang.Categorical):
            node = space_lang.Categorical(tuple(map(data.anchored_path, node.options)))
        children[key] = node
    return space_lang.Group(children)


def data_source(spec: Spec) -> data.DataSource:
    """How the spec's dataset is loaded: what the driver and every trial's node read."""
    return data.DataSource(
        spec.data.dataset,
        root=spec.data.root,
        val_fraction=spec.data.val_fraction,
        test_fraction=spec.data.test_fraction,
        seed=spec.data.seed,
        max_train=spec.data.max_train,
        max_test=spec.data.max_test,
        options=spec.data.options,
        keep_in=spec.data.keep_in,
        cache_dir=spec.data.cache_dir,
    ).anchored()
