"""The Optuna searcher as Tune drives it: Tune saves its state again and again, and the
searcher writes its file only when it changed, so what a resume reads is always current."""

from __future__ import annotations

from pathlib import Path

from tuner.search import tune_config
from tuner.spec import load_spec

SPEC = """\
name: t
data: {dataset: digits}
search: {algorithm: optuna, num_samples: 4}
space:
  model: {name: simple_cnn, width: {int: [8, 16]}}
  optimizer: {name: adam, lr: {loguniform: [1e-4, 1e-1]}}
"""


def searcher_of(tmp_path: Path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(SPEC)
    spec = load_spec(spec_file)
    return tune_config(spec, spec.tree).search_alg


def test_the_searcher_is_saved_when_it_changed_and_restores_from_it(tmp_path):
    searcher, folder = searcher_of(tmp_path), tmp_path / "state"
    folder.mkdir()
    searcher.suggest("a")

    def saved() -> tuple[int, int]:  # the file's identity: os.replace makes a new one
        searcher.save_to_dir(str(folder), "s")
        (path,) = folder.glob("searcher-state-s.pkl")
        return path.stat().st_ino, path.stat().st_mtime_ns

    first = saved()
    assert saved() == first  # nothing changed: the file stays
    searcher.on_trial_result("a", {"val_acc": 0.5, "training_iteration": 1})
    assert saved() == first  # epochs are not told to the study
    searcher.on_trial_complete("a", {"val_acc": 0.6, "training_iteration": 2})
    completed = saved()
    assert completed != first
    searcher.suggest("b")
    assert saved() != completed
    searcher.save_to_dir(str(folder), "other-session")
    assert (folder / "searcher-state-other-session.pkl").is_file()

    restored = searcher_of(tmp_path)
    restored.restore_from_dir(str(folder))
    assert sorted(restored._ot_trials) == ["a", "b"]
    (finished,) = restored._ot_study.get_trials(deepcopy=False, states=None)[:1]
    assert finished.value == 0.6
