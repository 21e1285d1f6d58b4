"""Relative paths in a spec are anchored where it is loaded: trials run in their own
directories, so they receive absolute paths (and `~`, left for each node's own home)."""

from __future__ import annotations

from tuner import space as space_lang
from tuner.runner import anchored_space, trial_settings
from tuner.spec import load_spec

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
    model = anchored_space(space_lang.parse(spec.space)).children["model"]
    assert isinstance(model, space_lang.Branches)
    small, large = model.options["resnet18"].children, model.options["resnet34"].children
    assert small["pretrained"] == space_lang.Const(str(tmp_path / "weights" / "r18.pth"))
    assert large["pretrained"] == space_lang.Categorical(
        (None, str(tmp_path / "weights" / "a.pth"), "~/b.pth")
    )
    assert large["stem"] == space_lang.Const("auto")  # other settings untouched
