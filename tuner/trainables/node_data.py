"""A trial's data where it runs: from Ray's object store, or from its own node's cache.

Small data is put in the object store once, as numpy arrays, and every worker on a node reads
the same shared pages (zero-copy): one copy per node, not one per trial. A collection too large
for that is sent as a ``DataSource``: each worker opens its node's cache of decoded images
(built there once, from ``data.root``), and nothing large passes through the driver.
Either way a worker process reads the data once and keeps it: Tune reuses a worker for trial
after trial (``reuse_actors``), and each of them gets the very same ``Splits`` object.
"""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass, replace

import ray

from data import DatasetError, DataSource, Splits, pages
from data.splits import joined, tensors


class DataNotOnNode(DatasetError):
    """The driver read ``data.root``, but the node a trial runs on can't read it there."""


@dataclass(frozen=True)
class InMemory:
    """Splits the driver put in Ray's object store once, as numpy arrays; a worker maps them.

    The reference is wrapped so that Tune's ``with_parameters`` sends the reference itself and
    does not fetch (and deserialize) the whole dataset again for every trial.
    """

    ref: ray.ObjectRef

    @classmethod
    def put(cls, splits: Splits) -> InMemory:
        # Numpy arrays, not tensors: Ray reads numpy arrays back as views of the object
        # store's shared memory, where a pickled tensor is copied into each worker. Train and
        # val go as one array so that training on both (final.retrain) stays a view.
        arrays = (
            joined(splits.train_x, splits.val_x).numpy(),
            joined(splits.train_y, splits.val_y).numpy(),
            len(splits.train_y),
            splits.test_x.numpy(),
            splits.test_y.numpy(),
            splits.classes,
        )
        return cls(ray.put(arrays))


RECEIVED: dict[str, Splits] = {}  # this process's in-memory splits, by object id (one entry)


def splits_on_node(data: Splits | InMemory | DataSource) -> Splits:
    """The trial's splits: as sent, read from the object store, or opened from this node's
    cache, once per process.

    The first thing each trainable's ``train`` calls, so every kind of data looks the same below.
    """
    if isinstance(data, Splits):
        return data
    if isinstance(data, InMemory):
        return _received(data.ref)
    try:
        return data.load_once()
    except DatasetError as error:
        raise DataNotOnNode(
            f"data.root {data.root} is not readable on {this_node()}: {error}; the driver read it "
            "on its own machine, so copy the dataset to that path on every node, or point "
            "data.root at a file system all nodes share"
        ) from None


def _received(ref: ray.ObjectRef) -> Splits:
    """The object store's splits as read-only tensors over its shared memory (no copy)."""
    key = ref.hex()
    if key not in RECEIVED:
        RECEIVED.clear()
        arrays = ray.get(ref)
        for images in (arrays[0], arrays[3]):
            # Shared memory: passes over it release what they read (data.pages), and the pages
            # this process wrote there when it put them (the driver) go now.
            if pages.register(images):
                pages.forget(images)
        splits = tensors(*arrays)
        # Sent on to a Ray task (final.retrain, repeats), they travel as this reference.
        RECEIVED[key] = replace(splits, reopen=functools.partial(_received, ref))
    return RECEIVED[key]


def this_node() -> str:
    """Which machine of the cluster this process is on: Ray node id, IP address and host name."""
    node_id = ray.get_runtime_context().get_node_id()
    return f"node {node_id} ({ray.util.get_node_ip_address()}, host {socket.gethostname()})"
