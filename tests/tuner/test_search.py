"""tuner's searchers as Tune drives them: Tune saves its state again and again, and the Optuna
searcher writes its file only when it changed, so what a resume reads is always current; and a
resumed searcher hears what became of the trials it had suggested."""

from __future__ import annotations

from pathlib import Path

from ray.tune.experiment import Trial

from tuner.search.searchers import tune_config
from tuner.spec.document import load_spec

SPEC = """\
name: t
data: {dataset: digits}
search: {algorithm: optuna, num_samples: 4}
space:
  model: {name: simple_cnn, width: {int: [8, 16]}}
  optimizer: {name: adam, lr: {loguniform: [1e-4, 1e-1]}}
"""


def searcher_of(tmp_path: Path, search: str = "algorithm: optuna"):
    """The searcher tuner gives Tune for SPEC with ``search`` (its search section's start)."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(SPEC.replace("algorithm: optuna", search))
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


def _train(config: dict) -> None:
    """A trainable for Tune's variant generator to make trials of (none runs here)."""


def _trial(trial_id: str, status: str, val_acc: float | None = None) -> Trial:
    """A trial as Tune restores it on a resume."""
    trial = Trial("train", trial_id=trial_id, stub=True)
    trial.set_status(status)
    if val_acc is not None:
        trial.update_last_result({"val_acc": val_acc, "training_iteration": 3})
    return trial


def test_a_resumed_searcher_hears_what_became_of_the_trials_it_suggested(tmp_path):
    searcher = searcher_of(tmp_path)
    for trial_id in "abc":
        searcher.suggest(trial_id)
    # Tune's last save held a (finished since) and b (running); c was suggested after it.
    searcher.resumed([_trial("a", Trial.TERMINATED, val_acc=0.7), _trial("b", Trial.RUNNING)])
    a, b, c = searcher._ot_study.get_trials(deepcopy=False)
    assert (a.state.name, a.value) == ("COMPLETE", 0.7)  # told as Tune would have
    assert b.state.name == "RUNNING"  # Tune resumes it, and tells its end
    assert c.state.name == "FAIL"  # lost with the driver: never to be told


def test_a_resumed_concurrency_limit_counts_and_passes_on_the_resumed_trials(tmp_path):
    limiter = searcher_of(tmp_path, "algorithm: optuna, max_concurrent: 2")
    limiter.suggest("a")
    limiter.suggest("b")
    limiter.live_trials.clear()  # Ray does not save them: a restored limiter counts none
    limiter.resumed([_trial("a", Trial.TERMINATED, val_acc=0.7), _trial("b", Trial.RUNNING)])
    assert limiter.live_trials == {"b"}
    assert limiter.suggest("c") is not None
    assert limiter.suggest("d") is None  # b and c run: the limit is 2
    limiter.on_trial_complete("b", {"val_acc": 0.8, "training_iteration": 3})
    values = [t.value for t in limiter.searcher._ot_study.get_trials(deepcopy=False)]
    assert values == [0.7, 0.8, None]


def test_a_resumed_variant_generator_stops_counting_finished_trials_as_running(tmp_path):
    generator = searcher_of(tmp_path, "algorithm: random, max_concurrent: 2")
    generator.add_configurations({"t": {"run": _train, "num_samples": 2}})
    first, second = generator.next_trial(), generator.next_trial()
    generator.resumed(
        [_trial(first.trial_id, Trial.TERMINATED), _trial(second.trial_id, Trial.ERROR)]
    )
    assert generator.next_trial() is None
    assert generator.is_finished()  # before: at its limit of 2 running, never finished
