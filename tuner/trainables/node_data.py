"""A trial's data where it runs: sent in memory, or read from ``data.root`` on its own node.

Either way a worker process reads the data once and keeps it: Tune reuses a worker for trial
after trial (``reuse_actors``), and each of them gets the very same ``Splits`` object.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import ray

from data import DatasetError, DataSource, Splits


class DataNotOnNode(DatasetError):
    """The driver read ``data.root``, but the node a trial runs on can't read it there."""


@dataclass(frozen=True)
class InMemory:
    """Splits the driver put in Ray's object store once; a worker fetches them once.

    The reference is wrapped so that Tune's ``with_parameters`` sends the reference itself and
    does not fetch (and deserialize) the whole dataset again for every trial.
    """

    ref: ray.ObjectRef

    @classmethod
    def put(cls, splits: Splits) -> InMemory:
        return cls(ray.put(splits))


RECEIVED: dict[str, Splits] = {}  # this process's in-memory splits, by object id (one entry)


def splits_on_node(data: Splits | InMemory | DataSource) -> Splits:
    """The trial's splits: as sent, or loaded from ``data.root`` on this node, once per process.

    The first thing each trainable's ``train`` calls, so both kinds of data look the same below.
    """
    if isinstance(data, Splits):
        return data
    if isinstance(data, InMemory):
        key = data.ref.hex()
        if key not in RECEIVED:
            RECEIVED.clear()
            RECEIVED[key] = ray.get(data.ref)
        return RECEIVED[key]
    try:
        return data.load_once()
    except DatasetError as error:
        raise DataNotOnNode(
            f"data.root {data.root} is not readable on {this_node()}: {error}; the driver read it "
            "on its own machine, so copy the dataset to that path on every node, or point "
            "data.root at a file system all nodes share"
        ) from None


def this_node() -> str:
    """Which machine of the cluster this process is on: Ray node id, IP address and host name."""
    node_id = ray.get_runtime_context().get_node_id()
    return f"node {node_id} ({ray.util.get_node_ip_address()}, host {socket.gethostname()})"
