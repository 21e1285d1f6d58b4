"""What every trial of a spec needs besides its config: its data and its settings."""

from __future__ import annotations

import data
from tuner.core.errors import UsageError
from tuner.spec import space as space_lang
from tuner.spec.document import Spec
from tuner.trainables import Settings


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
    """The spec's dataset, split; a missing or malformed one is a UsageError (exit 2)."""
    try:
        return data_source(spec).load()
    except data.DatasetError as error:
        raise UsageError(f"data: {error}") from None
    except TypeError as error:  # an option the loader doesn't take
        raise UsageError(f"data.options: {error}") from None


PATH_PARAMS = ("pretrained",)  # model options naming a local file, read inside trials


def anchored_space(group: space_lang.Group) -> space_lang.Group:
    """``group`` with every ``pretrained`` path (a constant, or each option of a choice) made
    absolute from here: trials run in their own directories."""
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
    ).anchored()
