"""Where a search keeps an image folder's decoded images (`data.keep_in`): the same search,
in memory and from each node's cache, trains to the same values; `tuner data prepare` builds
the cache ahead; a cache for data a loader decodes itself is refused at load."""

from __future__ import annotations

import pytest

from tests.helpers import new_store, tuner_run
from tuner.commands.cli import main
from tuner.spec.document import SpecError, load_spec
from tuner.tracking.tags import TRIAL_ROLE, Tag

SPEC = """\
name: files_{keep_in}
data: {{dataset: image_folder, root: {root}, keep_in: {keep_in}, cache_dir: {cache},
  options: {{image_size: 8, grayscale: true}}}}
search: {{algorithm: random, num_samples: 1, seed: 0}}
scheduler: {{type: fifo, max_epochs: 2}}
final: {{repeats: 1}}
resources: {{cpu: 1}}
space:
  model: {{name: simple_cnn, width: 16, depth: 2}}
  optimizer: {{choice: {{adam: {{lr: {{loguniform: [1e-3, 1e-2]}}}}}}}}
  batch_size: 32
"""


@pytest.fixture
def folder(tmp_path, digits, write_image_tree):
    """172 digits of 3 classes as PNG / JPEG files of varying sizes."""
    root = tmp_path / "digits"
    write_image_tree(root, digits[0][:600], digits[1][:600], classes=3)
    return root


def _val_acc(store) -> list[float]:
    runs = store.client.search_runs(
        [e.experiment_id for e in store.client.search_experiments()], max_results=100
    )
    trials = [r for r in runs if r.data.tags.get(Tag.ROLE) == TRIAL_ROLE]
    return [r.data.metrics["val_acc"] for r in trials]


def test_a_search_from_the_cache_trains_as_one_in_memory(
    ray_session, tmp_path_factory, folder, capsys
):
    values = {}
    for keep_in in ("memory", "cache"):
        store = new_store(tmp_path_factory, f"files_{keep_in}")
        cache = store.tmp / "images"
        tuner_run(store, SPEC.format(keep_in=keep_in, root=folder, cache=cache))
        first = capsys.readouterr().out.splitlines()[0]
        assert first.startswith("data: 172 images, 0.0 MB decoded at 8 px (0% of this node's ")
        kept = "in memory, once per node" if keep_in == "memory" else "in each node's cache"
        assert f"): kept {kept}" in first and first.endswith(f"(data.keep_in: {keep_in})")
        assert cache.is_dir() == (keep_in == "cache")
        values[keep_in] = _val_acc(store)
    assert len(values["cache"]) == 1 and values["cache"] == values["memory"]


def test_prepare_builds_the_cache_a_search_opens(tmp_path, folder, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(keep_in="auto", root=folder, cache=tmp_path / "images"))
    assert main(["data", "prepare", str(spec)]) == 0  # auto: small enough for memory
    assert "nothing to prepare: the search decodes it in memory" in capsys.readouterr().out
    assert not (tmp_path / "images").exists()
    assert main(["data", "prepare", str(spec), "--set", "data.keep_in=cache"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"data: cached in {tmp_path / 'images'}: train=109 val=28 test=35"
    entries = [p for p in (tmp_path / "images").iterdir() if p.is_dir()]
    assert len(entries) == 2 and all((p / "meta.json").is_file() for p in entries)


def test_prepare_on_a_cluster_builds_each_nodes_cache_there(ray_session, tmp_path, folder):
    from dataclasses import replace

    from tuner.commands.prepare import on_every_node
    from tuner.search.inputs import data_source

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(keep_in="cache", root=folder, cache=tmp_path / "images"))
    source = replace(data_source(load_spec(spec)), keep_in="cache")
    (node,) = [n["NodeID"] for n in ray_session.nodes() if n["Alive"]]
    (line,) = on_every_node(source)
    assert line.startswith(f"node {node} (") and line.endswith(
        f"train=109 val=28 test=35, cached in {tmp_path / 'images'}"
    )
    assert len([p for p in (tmp_path / "images").iterdir() if p.is_dir()]) == 2


def test_a_cache_of_data_its_loader_decodes_is_refused_at_load(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\ndata: {dataset: digits, keep_in: cache}\n")
    with pytest.raises(SpecError, match=r"data\.keep_in: digits decodes its images itself"):
        load_spec(spec)
    assert load_spec(spec, ["data.keep_in=memory"]).data.keep_in == "memory"
