"""Relative paths in a spec are anchored where it is loaded: trials run in their own
directories, so they receive absolute paths (and `~`, left for each node's own home)."""

from __future__ import annotations

import pytest

from tuner.core.errors import UsageError
from tuner.search.inputs import anchored_space, trial_settings
from tuner.spec import space as space_lang
from tuner.spec.document import load_spec
from tuner.tracking.experiment import Experiment
from tuner.tracking.files import artifact_location
from tuner.tracking.tags import SearchTags

SPEC = """\
name: paths
cache_dir: features
space:
  model:
    choice:
      resnet18: {pretrained: weights/r18.pth, stem: auto}
      resnet34: {stem: auto, pretrained: {choice: [null, weights/a.pth, ~/b.pth]}}
  optimizer: {name: adam, lr: 0.001}
"""


def _loaded(tmp_path, monkeypatch, overrides: list[str] | None = None):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paths.yaml").write_text(SPEC)
    return load_spec("paths.yaml", overrides)


def test_relative_cache_dir_reaches_trials_absolute(tmp_path, monkeypatch):
    assert trial_settings(_loaded(tmp_path, monkeypatch)).cache_dir == str(tmp_path / "features")
    home = _loaded(tmp_path, monkeypatch, ["cache_dir=~/.cache/x"])
    assert trial_settings(home).cache_dir == "~/.cache/x"


def test_relative_pretrained_reaches_trials_absolute(tmp_path, monkeypatch):
    spec = _loaded(tmp_path, monkeypatch)
    model = anchored_space(spec.tree).children["model"]
    assert isinstance(model, space_lang.Branches)
    small, large = model.options["resnet18"].children, model.options["resnet34"].children
    assert small["pretrained"] == space_lang.Const(str(tmp_path / "weights" / "r18.pth"))
    assert large["pretrained"] == space_lang.Categorical(
        (None, str(tmp_path / "weights" / "a.pth"), "~/b.pth")
    )
    assert large["stem"] == space_lang.Const("auto")  # other settings untouched


def test_artifacts_live_beside_a_sqlite_store_not_in_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "store").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    experiment = Experiment(f"sqlite:///{tmp_path / 'store' / 'm.db'}", "a/b c")
    experiment.start(_spec_file(tmp_path), SearchTags())
    beside = tmp_path / "store" / "mlartifacts" / "a_b_c"
    assert experiment.artifacts == beside.as_uri()
    assert (beside / experiment.parent_id / "artifacts" / "spec" / "s.yaml").is_file()
    assert list((tmp_path / "elsewhere").iterdir()) == []  # no ./mlruns


def test_artifacts_go_where_the_spec_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert Experiment(uri, "x", "keep").artifacts == (tmp_path / "keep" / "x").as_uri()
    assert Experiment(uri, "y", "s3://bucket/runs").artifacts == "s3://bucket/runs/y"
    # An experiment keeps the location it was created with.
    assert Experiment(uri, "x", "other").artifacts == (tmp_path / "keep" / "x").as_uri()


def _spec_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\n")
    return path


def test_a_local_artifacts_folder_with_a_tracking_server_is_refused(tmp_path):
    with pytest.raises(UsageError, match=r"tracking.artifacts=keep is a folder on this machine"):
        artifact_location("http://mlflow-host:5000", "x", "keep")
    assert artifact_location("http://mlflow-host:5000", "x", "s3://b/p") == "s3://b/p/x"
    assert artifact_location("http://mlflow-host:5000", "x") is None  # the server chooses
