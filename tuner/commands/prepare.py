"""`tuner data prepare SPEC`: the cache of decoded images a search will open, built ahead.

On this machine, or, with ``--address`` (or ``$RAY_ADDRESS``), on every node of a running Ray
cluster: one Ray task pinned to each node builds that node's cache from ``data.root`` (a shared
path or an object store), so no image passes through this machine.
"""

from __future__ import annotations

from dataclasses import replace

import data
from tuner.core.errors import UsageError
from tuner.core.terminal import say
from tuner.search.inputs import data_source
from tuner.spec.document import Spec


def prepare(spec: Spec, address: str | None) -> None:
    """Build ``spec``'s image cache here, or on every node of the cluster at ``address``."""
    source = data_source(spec)
    try:
        dataset = source.read()
        placement = source.placement(dataset)
    except data.DatasetError as error:
        raise UsageError(f"data: {error}") from None
    if not isinstance(dataset, data.ImageFiles):
        say(f"data: {spec.data.dataset} is decoded by its loader at each search: nothing to cache")
        return
    say(f"data: {placement.reason}")
    if placement.where != "cache":
        say("nothing to prepare: the search decodes it in memory (data.keep_in: cache caches it)")
        return
    source = replace(source, keep_in="cache")
    if address is None:
        splits = _built(source)
        say(f"data: cached in {source.cache_dir}: {splits.sizes}")
        return
    import ray

    ray.init(address=address)
    try:
        for line in on_every_node(source):
            say(line)
    finally:
        ray.shutdown()


def _built(source: data.DataSource) -> data.Splits:
    try:
        return source.load(say=say)
    except data.DatasetError as error:
        raise UsageError(f"data: {error}") from None


def on_every_node(source: data.DataSource) -> list[str]:
    """One task per alive node of the connected Ray cluster, each building its node's cache;
    a line per node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from tuner.trainables.node_data import splits_on_node, this_node

    @ray.remote(num_cpus=0)  # its threads use every core; asking for one could wait on a search
    def build(source: data.DataSource) -> str:
        return f"{this_node()}: {splits_on_node(source).sizes}, cached in {source.cache_dir}"

    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    pinned = [NodeAffinitySchedulingStrategy(node, soft=False) for node in nodes]
    return ray.get([build.options(scheduling_strategy=s).remote(source) for s in pinned])
