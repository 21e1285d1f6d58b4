"""A trial's data on its node: in-memory splits as sent, `data.root` read where the trial runs."""

from __future__ import annotations

import os
import pickle
import socket
import struct

import ray
import torch

import data
from tuner.search.inputs import data_source
from tuner.spec.document import load_spec
from tuner.trainables.node_data import DataNotOnNode, InMemory, splits_on_node


@ray.remote
def _attempt(source: data.DataSource) -> str:
    """What a trial on a Ray worker sees of a root that isn't there: the error's text."""
    try:
        splits_on_node(source)
    except DataNotOnNode as error:
        return str(error)
    return "loaded"


def test_a_root_missing_on_the_node_is_one_line_naming_node_path_and_fix(ray_session, tmp_path):
    missing = tmp_path / "datasets" / "mnist"
    message = ray.get(_attempt.remote(data.DataSource("mnist", root=str(missing))))
    (node,) = [n for n in ray.nodes() if n["Alive"]]
    assert "\n" not in message
    assert f"data.root {missing} is not readable on node {node['NodeID']} " in message
    assert f"({node['NodeManagerAddress']}, host {socket.gethostname()}): " in message
    assert f": mnist: no idx files under {missing}, " in message  # the loader's own reason
    assert message.endswith(
        "; the driver read it on its own machine, so copy the dataset to that path on every "
        "node, or point data.root at a file system all nodes share"
    )


def test_in_memory_splits_are_used_as_sent():
    splits = data.load("digits", max_train=100, max_test=50)
    assert splits_on_node(splits) is splits


def test_relative_roots_are_anchored_at_the_driver_cwd_and_home_left_to_each_node(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "name: x\ndata: {dataset: image_folder, root: scenes/train,\n"
        "  options: {test_root: scenes/test, image_size: 16}}\n"
    )
    source = data_source(load_spec(spec_file))
    assert source.root == str(tmp_path / "scenes" / "train")
    assert source.options == {"test_root": str(tmp_path / "scenes" / "test"), "image_size": 16}
    home = load_spec(spec_file, ["data.root=~/scenes/train", "data.options.test_root=~/test"])
    assert data_source(home).root == "~/scenes/train"
    assert data_source(home).options["test_root"] == "~/test"


@ray.remote
class _Worker:
    """One worker process, as a reused Tune trial actor is: it serves trial after trial."""

    def receive(self, sent: InMemory) -> tuple[int, int]:
        splits = splits_on_node(sent)
        return id(splits), len(splits.train_y)


def test_in_memory_splits_are_fetched_once_per_worker_process(ray_session):
    splits = data.load("digits", max_train=100, max_test=50)
    sent = InMemory.put(splits)
    worker = _Worker.remote()
    first, second = ray.get([worker.receive.remote(sent), worker.receive.remote(sent)])
    assert first == second  # the same object: not fetched and deserialized again
    assert first[1] == len(splits.train_y)
    smaller = data.load("digits", max_train=60)
    other = ray.get(worker.receive.remote(InMemory.put(smaller)))
    assert other[1] == len(smaller.train_y) < len(splits.train_y)  # another search's data


@ray.remote
def _where_it_lives(sent: InMemory) -> tuple[bool, int, int]:
    """In a worker: whether the splits' pages are the object store's shared memory (a mapping
    of Ray's plasma file, not this process's heap), and how many images it sees."""
    splits = splits_on_node(sent)
    return _in_shared_memory(splits.train_x.data_ptr()), len(splits.train_y), len(splits.val_y)


def _own_pages(address: int, nbytes: int) -> int:
    """Pages of ``[address, address + nbytes)`` mapped in this process and in no other (its USS
    there), read from /proc/self/pagemap: bit 63 present, bit 56 mapped exclusively. Only this
    range: the object store's mapping holds other tests' objects too."""
    page = os.sysconf("SC_PAGE_SIZE")
    first, last = address // page, (address + nbytes - 1) // page
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(first * 8)
        entries = struct.unpack(f"{last - first + 1}Q", pagemap.read((last - first + 1) * 8))
    return sum(1 for e in entries if e >> 63 & 1 and e >> 56 & 1)


def _in_shared_memory(address: int) -> bool:
    for line in open("/proc/self/maps").read().splitlines():  # noqa: SIM115 (read whole)
        start, end = (int(part, 16) for part in line.split()[0].split("-"))
        if start <= address < end:
            return "plasma" in line or "/dev/shm" in line
    return False


def test_in_memory_splits_are_held_once_per_node_and_read_zero_copy(ray_session):
    from tuner.search.inputs import shared_data

    splits = data.load("digits", max_train=1000, max_test=100)  # ~70 kB: beyond Ray's inlining
    sent, driver_splits = shared_data(splits)
    assert isinstance(sent, InMemory)
    # The pages the driver wrote with its put are not kept as its own (data.pages): checked
    # before any worker maps them too.
    train_x = driver_splits.train_x
    assert _own_pages(train_x.data_ptr(), train_x.nbytes) < train_x.nbytes / 4096 / 4
    shared, train, val = ray.get(_where_it_lives.remote(sent))
    assert shared and (train, val) == (len(splits.train_y), len(splits.val_y))
    # The driver drops its own copy and reads the object store's, as every worker does.
    assert _in_shared_memory(driver_splits.train_x.data_ptr())
    for name in ("train_x", "train_y", "val_x", "test_x", "test_y"):
        assert torch.equal(getattr(driver_splits, name), getattr(splits, name)), name
    # Sent on to a task (final.retrain), they travel as the object store reference.
    assert len(pickle.dumps(driver_splits)) < 1_000 < driver_splits.train_x.numel()
    both = driver_splits.with_val_in_train()  # train and val one block: a view, no copy
    assert both.train_x.data_ptr() == driver_splits.train_x.data_ptr()
