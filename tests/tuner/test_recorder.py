"""The MLflow recorder on a real sqlite store, driven with real Tune ``Trial`` objects: every
epoch arrives once and in order, the writes leave Tune's loop, and nothing is lost at the end."""

from __future__ import annotations

import pickle
import queue
import threading
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from tuner.publishing.anytime import search_curve
from tuner.search.recorder import TrialRecorder
from tuner.spec import space as space_lang
from tuner.tracking import writer as writes
from tuner.tracking.experiment import Experiment
from tuner.tracking.tags import SearchTags, Status, Tag
from tuner.tracking.writer import TrialRun, Write, merged

EPOCHS = 6
SPACE = space_lang.parse({"model": {"width": {"int": [8, 32]}}})


def new_trial(trial_id: str, width: int) -> Trial:
    # stub: a Trial as Tune builds it, without looking a trainable up in Ray's registry
    return Trial("train", stub=True, trial_id=trial_id, config={"model": {"width": width}})


def result(step: int, val_acc: float) -> dict:
    return {
        "training_iteration": step,
        "epochs": EPOCHS,
        "train_loss": 1.0 / step,
        "val_acc": val_acc,
        "node_id": "node-a",
        "model_params": 1234,  # the same every epoch
    }


def ids(experiment: Experiment) -> tuple[str, str, str]:
    return experiment.tracking_uri, experiment.experiment_id, experiment.parent_id


def record_search(tmp_path: Path, name: str = "rec") -> tuple[Experiment, list[Trial]]:
    """A parent run and two trials whose results interleave, recorded the way Tune drives it;
    the second trial stops after 3 epochs, as ASHA would stop it."""
    experiment = Experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", name)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: {name}\n")
    experiment.start(spec, SearchTags(metric="val_acc", mode="max"))
    recorder = TrialRecorder(*ids(experiment), "val_acc", "max", SPACE)
    recorder.setup()
    trials = [new_trial("t1", 16), new_trial("t2", 32)]
    for trial in trials:
        recorder.on_trial_start(iteration=0, trials=trials, trial=trial)
    for step in range(1, EPOCHS + 1):
        for trial in trials:
            if trial.trial_id == "t2" and step > 3:
                continue
            value = 0.5 + 0.05 * step if trial.trial_id == "t1" else 0.9 - 0.1 * step
            trial.update_last_result(result(step, value))
            recorder.on_trial_result(
                iteration=step, trials=trials, trial=trial, result=trial.last_result
            )
        if step == 3:
            recorder.on_trial_complete(iteration=step, trials=trials, trial=trials[1])
    recorder.on_trial_complete(iteration=EPOCHS, trials=trials, trial=trials[0])
    assert pickle.loads(pickle.dumps(recorder)).runs == {}  # Tune pickles it mid-search
    recorder.on_experiment_end(trials=trials)
    return experiment, trials


def test_every_epoch_arrives_once_and_in_order_after_the_experiment_ends(tmp_path):
    experiment, _ = record_search(tmp_path)
    assert (experiment.tracking_uri, None) not in writes._writers  # the thread was stopped
    client = experiment.client
    runs = {run.data.tags[Tag.TRIAL_ID]: run for run in experiment.children()}
    assert sorted(runs) == ["t1", "t2"]
    for trial_id, epochs in (("t1", EPOCHS), ("t2", 3)):
        run = runs[trial_id]
        for key in ("train_loss", "val_acc", "epoch", "final_val_acc"):
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == list(range(1, epochs + 1)), (trial_id, key)
        assert run.info.status == "FINISHED"
        assert run.data.tags[Tag.NODE_ID] == "node-a"
    assert runs["t1"].data.tags[Tag.STATUS] == Status.COMPLETED
    assert runs["t2"].data.tags[Tag.STATUS] == Status.EARLY_STOPPED
    assert runs["t1"].data.params == {"model.width": "16"}
    # The model's size: one value per run, not a flat line per epoch.
    (size,) = client.get_metric_history(runs["t1"].info.run_id, "model_params")
    assert (size.value, size.step) == (1234, 0)
    # Each trial's final value: the mean of its last 2 epochs (tuner.core.selection), no longer its
    # best epoch (t2's first, 0.8, would have beaten t1's 0.8 too).
    assert runs["t1"].data.metrics["final_val_acc"] == pytest.approx(0.775)
    assert runs["t2"].data.metrics["final_val_acc"] == pytest.approx(0.65)  # 0.8, 0.7, 0.6


def test_ctrl_c_marks_what_was_queued_before_it(tmp_path):
    """Ctrl-C skips on_experiment_end: Experiment.interrupt flushes the queue, then marks the
    runs still running (a writer this fast usually has everything written by then anyway)."""
    experiment = Experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "stopped")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: stopped\n")
    experiment.start(spec, SearchTags())
    recorder = TrialRecorder(*ids(experiment), "val_acc", "max", SPACE)
    trial = new_trial("t1", 8)
    recorder.on_trial_start(iteration=0, trials=[trial], trial=trial)
    for step in range(1, 41):
        recorder.on_trial_result(
            iteration=step, trials=[trial], trial=trial, result=result(step, 0.5)
        )
    experiment.interrupt()
    (run,) = experiment.children()
    assert run.info.status == "KILLED"
    assert run.data.tags[Tag.STATUS] == Status.INTERRUPTED
    steps = [m.step for m in experiment.client.get_metric_history(run.info.run_id, "epoch")]
    assert steps == list(range(1, 41))
    writes.flush_writes(experiment.tracking_uri, close=True)


def test_a_failed_write_is_reported_at_flush(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # create the store's tables
    writer = writes.writer(uri)
    writer.put(Write("no-such-run", metrics=[Metric("val_acc", 0.5, 0, 1)]))
    with pytest.warns(UserWarning, match="1 MLflow write.* failed: run no-such-run"):
        writes.flush_writes(uri, close=True)


def test_queued_writes_merge_per_run_and_keep_each_runs_order():
    def metric(step: int) -> Metric:
        return Metric("val_acc", 0.5, 0, step)

    writes = [
        Write("a", metrics=[metric(1)]),
        Write("b", metrics=[metric(1)]),
        Write("a", metrics=[metric(2)]),
        Write("a", metrics=[metric(3)], status="FINISHED"),
        Write("a", status="RUNNING"),  # a retried trial: after its end, never merged before it
        Write("b", metrics=[metric(2)]),
        Write("a", metrics=[metric(4)]),  # its start takes what follows it, and keeps RUNNING
    ]
    out = merged(writes)
    assert [(w.run, [m.step for m in w.metrics], w.status) for w in out] == [
        ("a", [1, 2, 3], "FINISHED"),
        ("b", [1, 2], None),
        ("a", [4], "RUNNING"),
    ]


class CountingClient:
    """A real MlflowClient that counts the store calls made through it."""

    def __init__(self, client: MlflowClient) -> None:
        self.client, self.calls = client, []

    def __getattr__(self, name: str):
        self.calls.append(name)
        return getattr(self.client, name)


def counted_sender(tmp_path: Path) -> tuple[Experiment, writes.Sender, CountingClient]:
    """A search's sender (what the writer process runs), in this process, whose store calls
    are counted from its first trial on."""
    experiment = Experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "calls")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: calls\n")
    experiment.start(spec, SearchTags())
    writes.flush_writes(experiment.tracking_uri, close=True)  # the parent's writes
    sender = writes.Sender(experiment.tracking_uri)
    counting = CountingClient(sender.client)
    sender.client = counting
    return experiment, sender, counting


def one_trials_writes(experiment: Experiment) -> list[Write]:
    """A trial's start, 2 epochs and end, as the recorder queues them."""
    trial = TrialRun(experiment.experiment_id, experiment.parent_id, "t1")
    started = Write(
        trial,
        params=[Param("lr", "0.1")],
        tags=[RunTag(Tag.STATUS, Status.RUNNING)],
        status="RUNNING",
        start_time=1000,
    )
    epochs = [Write(trial, metrics=[Metric("val_acc", s / 10, 1000 + s, s)]) for s in (1, 2)]
    ended = Write(trial, tags=[RunTag(Tag.STATUS, Status.COMPLETED)], status="FINISHED", end_time=9)
    return [started, *epochs, ended]


def calls_made(counting: CountingClient) -> list[str]:
    # The search's runs are listed once per parent (one query, not one per trial).
    return [call for call in counting.calls if call != "search_runs"]


def test_a_new_trials_start_epochs_and_end_merged_are_three_store_calls(tmp_path):
    experiment, sender, counting = counted_sender(tmp_path)
    for write in merged(one_trials_writes(experiment)):
        sender.send(write)
    assert calls_made(counting) == ["create_run", "log_batch", "set_terminated"]
    (run,) = experiment.children()
    assert run.info.status == "FINISHED"
    assert (run.info.start_time, run.info.end_time) == (1000, 9)
    assert run.data.tags[Tag.STATUS] == Status.COMPLETED
    assert run.data.tags[Tag.TRIAL_ID] == "t1"
    assert run.data.params == {"lr": "0.1"}
    history = experiment.client.get_metric_history(run.info.run_id, "val_acc")
    assert sorted(m.step for m in history) == [1, 2]


def test_a_short_trials_writes_queued_within_the_linger_are_sent_as_one(tmp_path):
    """The writer waits LINGER_S after a write for more: a trial that ends within it is written
    in 3 store calls, however soon the writer woke up for its start."""
    experiment, sender, counting = counted_sender(tmp_path)
    requests, replies = queue.Queue(), queue.Queue()
    serving = threading.Thread(target=writes.serve, args=(sender, requests, replies))
    serving.start()
    started, *rest = one_trials_writes(experiment)
    requests.put((1, started))
    time.sleep(0.02)  # the writer wakes up for the start (and, without the linger, sends it)
    for seq, write in enumerate(rest, start=2):
        requests.put((seq, write))
    requests.put(writes._STOP)
    serving.join()
    assert [replies.get_nowait() for _ in range(2)] == [("written", 4), ("done", [], 0)]
    assert calls_made(counting) == ["create_run", "log_batch", "set_terminated"]
    (run,) = experiment.children()
    assert (run.info.status, run.data.tags[Tag.STATUS]) == ("FINISHED", Status.COMPLETED)


def test_a_trial_the_resumed_search_never_knew_has_its_run_removed(tmp_path, capsys):
    experiment, trials = record_search(tmp_path)
    # The resumed search's recorder: Tune's saved state knew t1 only (t2 started after it).
    resumed = TrialRecorder(*ids(experiment), "val_acc", "max", SPACE)
    resumed.setup()
    resumed.on_experiment_end(trials=[trials[0]])
    kept = {run.data.tags[Tag.TRIAL_ID] for run in experiment.children()}
    assert kept == {"t1"}
    assert "trial t2 was not in Tune's saved state: its run is removed" in capsys.readouterr().out


def curve_of(experiment: Experiment) -> list[tuple[int, float]]:
    parent = experiment.client.get_run(experiment.parent_id)
    return [(point.epochs, point.best) for point in search_curve(experiment.client, parent)]


def test_the_anytime_curve_is_kept_on_the_parent_and_a_resume_goes_on_from_it(tmp_path):
    experiment, trials = record_search(tmp_path)
    # t1 0.55, t2 0.8 (the best from then on: t1's last 0.8 only equals it), ... 9 epochs.
    assert curve_of(experiment) == [(1, 0.55), (2, 0.8), (9, 0.8)]
    resumed = TrialRecorder(*ids(experiment), "val_acc", "max", SPACE)
    resumed.setup()
    assert (resumed.anytime.epochs, resumed.anytime.best) == (9, 0.8)
    third = new_trial("t3", 8)
    resumed.on_trial_start(iteration=7, trials=[*trials, third], trial=third)
    for step, value in ((1, 0.7), (2, 0.85)):
        resumed.on_trial_result(
            iteration=7 + step, trials=[*trials, third], trial=third, result=result(step, value)
        )
    resumed.on_experiment_end(trials=[*trials, third])
    assert curve_of(experiment) == [(1, 0.55), (2, 0.8), (9, 0.8), (11, 0.85)]


def test_a_search_restarted_from_its_first_trial_starts_a_new_curve(tmp_path):
    experiment, _ = record_search(tmp_path)
    experiment.restart()  # Tune never saved its state: the trials' runs are deleted
    restarted = TrialRecorder(*ids(experiment), "val_acc", "max", SPACE)
    restarted.setup()
    trial = new_trial("t9", 8)
    restarted.on_trial_start(iteration=0, trials=[trial], trial=trial)
    restarted.on_trial_result(iteration=1, trials=[trial], trial=trial, result=result(1, 0.3))
    restarted.on_experiment_end(trials=[trial])
    assert curve_of(experiment) == [(1, 0.3)]  # not below the earlier search's 0.8
