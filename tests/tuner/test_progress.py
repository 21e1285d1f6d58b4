"""The progress line a search draws: its text from real Tune trials, on a terminal and off."""

from __future__ import annotations

import threading

import pytest
from ray.tune.experiment import Trial

from tuner.core import terminal
from tuner.search.progress import ProgressLine, TrialLines
from tuner.spec import space as space_lang
from tuner.tracking.tags import Status


def trial(
    trial_id: str,
    status: str,
    val_accs: list[float],
    rejected: bool = False,
    config: dict | None = None,
) -> Trial:
    # stub: a Trial as Tune builds it, without looking a trainable up in Ray's registry
    config = config or {"model": {"width": 16}}
    made = Trial("train", stub=True, trial_id=trial_id, config=config)
    for epoch, val_acc in enumerate(val_accs, 1):
        made.update_last_result(
            {"training_iteration": epoch, "val_acc": val_acc, "rejected": rejected}
        )
    made.set_status(status)
    return made


def search() -> list[Trial]:
    """Of 4 trials with a 5-epoch budget: 1 finished, 1 errored, 1 running, 1 pending."""
    return [
        trial("a_00000", Trial.TERMINATED, [0.80, 0.91, 0.90]),  # ASHA stopped it after 3
        trial("a_00001", Trial.ERROR, [0.50]),
        trial("a_00002", Trial.RUNNING, [0.85, 0.88]),
        trial("a_00003", Trial.PENDING, []),
    ]


def test_the_line_counts_trials_and_epochs_and_says_the_best_and_the_time_left():
    line = ProgressLine("val_acc", "max", 5, trainable="deep", tty=False)
    line.setup(total_num_samples=4)
    line.start_epochs = 0
    # 6 epochs in 60 s; the running trial may train 3 more, the pending one 5: 8 at 10 s each
    assert line.line(search(), 60.0) == (
        "trials 2/4 done (1 errored), 1 running · epochs 6/20 · best val_acc 0.9100 · "
        "1:00 elapsed, ~1:20 left"
    )


def test_the_time_budget_ends_the_search_when_it_comes_first():
    line = ProgressLine("val_loss", "min", 5, trainable="deep", time_budget_s=90, tty=False)
    line.setup(total_num_samples=8)
    line.start_epochs = 0
    text = line.line(search(), 60.0)
    assert text.startswith("trials 2/8 done (1 errored), 1 running · epochs 6/40 · ")
    assert "best val_loss" not in text  # no trial reported it
    assert text.endswith("1:00 elapsed, ~0:30 left")


def test_rejected_trials_are_never_the_best():
    line = ProgressLine("val_acc", "max", 5, trainable="deep", tty=False)
    trials = [trial("a_00000", Trial.TERMINATED, [0.99], rejected=True)]
    trials.append(trial("a_00001", Trial.TERMINATED, [0.7]))
    text = line.line(trials, 10.0)
    assert "best val_acc 0.7000" in text
    assert text.endswith("0:10 elapsed")  # every trial finished: nothing left to guess


def test_on_a_terminal_the_line_is_redrawn_in_place_and_cleared_for_tuner_lines(
    capsys, monkeypatch
):
    monkeypatch.setattr(terminal, "width", lambda: 200)  # a wide terminal: the whole line
    line = ProgressLine("val_acc", "max", 5, trainable="deep", tty=True)
    line.setup(total_num_samples=4)
    trials = search()
    line.on_step_end(1, trials)
    terminal.say("trial a_00002 completed: val_acc 0.9300 after 5 epochs | model.width=16")
    trials[2].set_status(Trial.TERMINATED)
    line.on_step_end(2, trials)  # a trial finished: drawn at once
    line.on_experiment_end(trials)
    out = capsys.readouterr().out
    draws = out.split("\r\x1b[K")
    assert draws[0] == ""  # every draw starts by going back and erasing
    assert draws[1].startswith("trials 2/4 done (1 errored), 1 running · epochs 6/20")
    assert "\n" not in draws[1]  # a live line: no newline, so the next draw replaces it
    assert draws[2] == "trial a_00002 completed: val_acc 0.9300 after 5 epochs | model.width=16\n"
    assert draws[3].startswith("trials 3/4 done (1 errored), 0 running")
    assert draws[4].startswith("trials 3/4 done") and draws[4].endswith("\n")  # the final one
    assert not terminal.drawn()


def test_a_note_from_another_thread_clears_the_line_first(capsys):
    """The background MLflow writer's notes (stderr) erase the live line (stdout) first, and the
    next draw puts it back below them."""
    line = ProgressLine("val_acc", "max", 5, trainable="deep", tty=True)
    line.setup(total_num_samples=4)
    trials = search()
    line.on_step_end(1, trials)
    writer = threading.Thread(target=terminal.note, args=["tuner: the MLflow server ..."])
    writer.start()
    writer.join()
    assert not terminal.drawn()
    captured = capsys.readouterr()
    assert captured.out.endswith("\r\x1b[K")  # drawn, then erased
    assert captured.err == "tuner: the MLflow server ...\n"
    line.on_experiment_end(trials)
    assert capsys.readouterr().out.startswith("\r\x1b[Ktrials 2/4 done")


def test_off_a_terminal_plain_lines_come_when_a_trial_finishes_not_every_step(capsys):
    line = ProgressLine("val_acc", "max", 5, trainable="deep", tty=False)
    line.setup(total_num_samples=4)
    trials = search()
    line.on_step_end(1, trials)
    line.on_step_end(2, trials)  # nothing finished, and far less than 30 s since
    trials[2].set_status(Trial.TERMINATED)
    line.on_step_end(3, trials)
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("trials 2/4 done (1 errored), 1 running · epochs 6/20 · ")
    assert lines[1].startswith("trials 3/4 done (1 errored), 0 running · epochs 6/20 · ")


def test_a_classical_trial_counts_one_epoch_whatever_the_budget():
    # fashion_knn.yaml: 30 one-step trials, max_epochs left at its default of 10
    line = ProgressLine("val_acc", "max", 10, trainable="classical", tty=False)
    line.setup(total_num_samples=30)
    line.start_epochs = 0
    trials = [trial(f"k_{i:05d}", Trial.TERMINATED, [0.8]) for i in range(13)]
    # 13 steps in 130 s; 17 trials of one step to go: 170 s
    assert line.line(trials, 130.0) == (
        "trials 13/30 done, 0 running · epochs 13/30 · best val_acc 0.8000 · "
        "2:10 elapsed, ~2:50 left"
    )


def test_a_deep_trial_counts_its_own_epochs_when_its_config_sets_them():
    line = ProgressLine("val_acc", "max", 5, trainable="deep", tty=False)
    line.setup(total_num_samples=3)
    line.start_epochs = 0
    trials = [
        trial("a_00000", Trial.TERMINATED, [0.8, 0.9], config={"epochs": 2}),
        trial("a_00001", Trial.RUNNING, [0.7], config={"epochs": 3}),
    ]
    # 3 epochs in 30 s; 2 more for the running trial, 5 for the one not made yet: 70 s
    assert line.line(trials, 30.0).endswith(
        "epochs 3/10 · best val_acc 0.9000 · 0:30 elapsed, ~1:10 left"
    )


WIDE = space_lang.parse({f"param{i:02d}": {"int": [1000000, 2000000]} for i in range(30)})


def wide_trial() -> Trial:
    config = {f"param{i:02d}": 1234567 for i in range(30)}  # ~500 columns of config
    return trial("w_00000", Trial.TERMINATED, [0.9688], config=config)


def test_on_a_terminal_a_trial_line_is_cut_to_its_width_with_an_ellipsis(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # what shutil.get_terminal_size reads first
    TrialLines("val_acc", "max", WIDE, tty=True).on_trial_complete(0, [], wide_trial())
    printed = capsys.readouterr().out.rstrip("\n")
    assert len(printed) == 99  # the last column wraps on some terminals
    assert printed.startswith("trial w_00000 completed: val_acc 0.9688 after 1 epoch | param00=")
    assert printed.endswith("…")


@pytest.mark.parametrize(("verbose", "tty"), [(True, True), (False, False)], ids=["verbose", "log"])
def test_verbose_or_off_a_terminal_a_trial_line_holds_the_whole_config(
    capsys, monkeypatch, verbose, tty
):
    monkeypatch.setenv("COLUMNS", "100")
    TrialLines("val_acc", "max", WIDE, verbose=verbose, tty=tty).on_trial_complete(
        0, [], wide_trial()
    )
    printed = capsys.readouterr().out
    assert printed.endswith("  param29=1234567\n") and "…" not in printed


def test_a_trial_line_is_cut_in_its_config_never_in_its_outcome():
    lines = TrialLines("val_acc", "max", WIDE)
    text = lines.line(wide_trial(), Status.COMPLETED, width=30)  # narrower than the outcome
    assert text == "trial w_00000 completed: val_acc 0.9688 after 1 epoch | …"


def test_a_trial_line_shows_the_value_the_trial_ranks_by_not_its_best_epoch(capsys):
    lines = TrialLines("val_acc", "max", space_lang.parse({"model": {"width": 16}}))
    spiked = trial("s_00000", Trial.TERMINATED, [0.5, 1.0, 0.6, 0.7])  # a one-epoch spike
    for epoch, value in enumerate([0.5, 1.0, 0.6, 0.7], 1):
        lines.on_trial_result(epoch, [], spiked, {"val_acc": value})
    lines.on_trial_complete(4, [], spiked)
    assert "completed: val_acc 0.6500 after 4 epochs" in capsys.readouterr().out  # 0.6, 0.7


def test_a_big_search_prints_a_trial_line_only_for_a_new_best(capsys):
    lines = TrialLines("val_acc", "max", space_lang.parse({"model": {"width": 16}}), tty=False)
    lines.setup(total_num_samples=1000)
    assert capsys.readouterr().out.startswith("1000 trials: a line for each new best and each")
    for index, value in enumerate([0.5, 0.4, 0.7, 0.7, 0.6, 0.9]):
        lines.on_trial_complete(0, [], trial(f"b_{index:05d}", Trial.TERMINATED, [value]))
    shown = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert shown == ["b_00000", "b_00002", "b_00005"]  # a tie is no new best (errors: always)


def test_a_big_search_off_a_terminal_shows_its_line_by_the_clock_not_per_trial(capsys):
    line = ProgressLine("val_acc", "max", 5, trainable="deep", tty=False)
    line.setup(total_num_samples=1000)
    trials = search()
    line.on_step_end(1, trials)
    trials[2].set_status(Trial.TERMINATED)
    line.on_step_end(2, trials)  # a trial finished, but far less than 30 s since the last line
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_a_thousand_trial_line_too_wide_for_the_terminal_keeps_the_time_left():
    """~100 columns at 1,000 trials: on an 80-column terminal the epochs go first, then the
    best value, so the line stays one line and still says how long is left."""
    line = ProgressLine("val_acc", "max", 5, trainable="deep", tty=True)
    line.setup(total_num_samples=1000)
    trials = [trial(f"c_{i:05d}", Trial.TERMINATED, [0.9]) for i in range(990)]
    trials += [trial(f"c_{i:05d}", Trial.ERROR, [0.5]) for i in range(990, 998)]
    trials += [trial(f"c_{i:05d}", Trial.RUNNING, [0.97, 0.98]) for i in (998, 999)]
    whole = line.line(trials, 3723.0)
    assert whole == (
        "trials 998/1000 done (8 errored), 2 running · epochs 1002/5000 · best val_acc 0.9800 · "
        "1:02:03 elapsed, ~0:22 left"
    )
    assert line.line(trials, 3723.0, columns=len(whole)) == whole  # it fits: all of it
    assert line.line(trials, 3723.0, columns=79) == (
        "trials 998/1000 done (8 errored), 2 running · 1:02:03 elapsed, ~0:22 left"
    )
    narrow = line.line(trials, 3723.0, columns=40)  # too narrow even so: cut at the end
    assert narrow == "trials 998/1000 done (8 errored), 2 run…" and len(narrow) == 40
