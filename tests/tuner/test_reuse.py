"""Tune reuses a finished trial's worker for the next trial (``reuse_actors``): a reused worker
must leak nothing into the trial it runs next."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from tests.helpers import new_store, tuner_run

# One trial at a time (2 CPUs each), so every trial after the first runs in the first one's
# worker; the grid alternates two configs (batch sizes 32, 64, 32, 64), so the second trial of
# batch size 32 follows another trial's different model state, optimizer state and random
# streams in the same process, where the first ran in a fresh one.
REUSE_SEARCH = """\
name: reuse
data: {dataset: digits, seed: 0, max_train: 400}
search: {algorithm: grid, seed: 0}
scheduler: {type: fifo, max_epochs: 3}
resources: {cpu: 2}
space:
  model: {name: simple_cnn, width: 16, depth: 2, dropout: 0.3}
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
  batch_size: {choice: [32, 64, 32, 64]}
  augment: {crop_padding: 1, erasing: 0.2}
"""


@pytest.mark.slow
def test_a_reused_worker_gives_the_same_metric_history_as_a_fresh_one(
    ray_session, tmp_path_factory
):
    store = new_store(tmp_path_factory, "reuse")
    tuner_run(store, REUSE_SEARCH)
    histories: dict[int, list[list[tuple[float, ...]]]] = defaultdict(list)
    workers = set()
    results = sorted((store.storage / "reuse").glob("*/result.json"))
    for path in results:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        histories[rows[0]["config"]["batch_size"]].append(
            [(row["train_loss"], row["val_loss"], row["val_acc"]) for row in rows]
        )
        workers.add(rows[0]["pid"])
    assert len(results) == 4
    assert len(workers) == 1  # all four trials ran in one worker process
    for name, (first, second) in histories.items():
        assert len(first) == 3, name
        assert first == second, name  # exactly: same seed, same config, nothing carried over
