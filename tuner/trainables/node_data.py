"""A trial's data where it runs: sent in memory, or read from ``data.root`` on its own node."""

from __future__ import annotations

import socket

import ray

from data import DatasetError, DataSource, Splits


class DataNotOnNode(DatasetError):
    """The driver read ``data.root``, but the node a trial runs on can't read it there."""


def splits_on_node(data: Splits | DataSource) -> Splits:
    """The trial's splits: as sent, or loaded from ``data.root`` on this node, once per process.

    The first thing each trainable's ``train`` calls, so both kinds of data look the same below.
    """
    if isinstance(data, Splits):
        return data
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
