"""What the terminal shows during a search: one progress line (rewritten in place on a
terminal, a plain line now and then elsewhere), one line per trial as it finishes, and with
``--verbose`` Ray's trial table, trimmed to the columns that say something."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from tuner.core import terminal
from tuner.core.objective import Objective
from tuner.core.selection import final_value, with_latest
from tuner.core.terminal import short_value
from tuner.search.trial_errors import error_line
from tuner.spec import space as space_lang
from tuner.tracking.tags import Status
from tuner.trainables import trainable_module, trial_report
from tuner.trainables.trial_report import TrialReport


def trial_table(metric: str, tree: space_lang.Group) -> tune.ProgressReporter:
    """Tune's periodic table (``--verbose``): the metric, epochs run, and the parameters every
    trial has."""
    sampled = space_lang.sampled_keys(tree, common_only=True)
    return tune.CLIReporter(
        metric_columns={metric: metric, "training_iteration": "epochs"},
        parameter_columns={key.replace(".", "/"): key for key in sampled},
        max_report_frequency=15,
        sort_by_metric=True,  # Tune passes the metric and mode to the reporter itself
    )


PLAIN_EVERY_S = 30  # off a terminal (CI, nohup, `ray job submit`): a line this often at most
REDRAW_EVERY_S = 0.5  # on a terminal: Tune's loop steps every few milliseconds
# The line reads every trial: redrawn no oftener than this many times the last line took, so
# it costs the driver at most ~2% of its time however many trials a search holds.
LINE_COST_SHARE = 50
# Beyond this many trials a search prints a line only for a trial that is the new best or that
# errored, and off a terminal a progress line only every PLAIN_EVERY_S: a thousand-trial search
# stays readable, and its driver does no work per trial that grows with the trials before it.
MANY_TRIALS = 100
DROPPED = ("epochs", "best")  # what a line too wide for the terminal leaves out, first to last


def _clock(seconds: float) -> str:
    """``0:42``, ``12:05``, ``1:02:07``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLine(tune.Callback):
    """``trials 7/24 done, 2 running · epochs 41/120 · best val_acc 0.9722 · 0:42 elapsed,
    ~1:10 left``: on a terminal one line rewritten in place; elsewhere a plain line at most
    every PLAIN_EVERY_S and whenever a trial finishes. The ETA is the sooner of the epochs
    left at the rate so far (ASHA stops trials early: an upper bound) and the time budget.
    Epochs are the results a trial of the ``trainable`` reports (a classical one: one).
    Holds only plain values: Tune pickles its callbacks into the experiment state.
    """

    def __init__(
        self,
        metric: str,
        mode: str,
        max_epochs: int,
        *,
        trainable: str,  # a key of trainables.TRAINABLES: how many epochs a trial runs
        time_budget_s: float | None = None,
        tty: bool | None = None,  # None: whether stdout is a terminal when the search runs
    ) -> None:
        self.metric = metric
        self.mode = mode
        self.max_epochs = max_epochs
        self.trainable = trainable
        self.time_budget_s = time_budget_s
        self.tty = tty
        self.total = 0
        self.started = self.shown = 0.0
        self.start_epochs: int | None = None  # epochs already run when this run (or resume) began
        self.last_text, self.last_done = "", -1
        self.line_seconds = 0.0  # what computing the last line took

    def setup(self, total_num_samples: int | None = None, **info: Any) -> None:
        self.total = total_num_samples or 0
        self.started, self.start_epochs = time.monotonic(), None

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.show(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.show(trials, final=True)

    def show(self, trials: list, *, final: bool = False) -> None:
        now = time.monotonic()
        tty = sys.stdout.isatty() if self.tty is None else self.tty
        wait = max(REDRAW_EVERY_S if tty else PLAIN_EVERY_S, LINE_COST_SHARE * self.line_seconds)
        # A small search also shows its line as each trial finishes.
        finished = self.total <= MANY_TRIALS and _done(trials) != self.last_done
        if not final and now - self.shown < wait and not finished:
            return
        if self.start_epochs is None:
            self.start_epochs = _epochs(trials)
        # Fitted on a terminal: a wrapped line can't be redrawn.
        text = self.line(trials, now - self.started, columns=terminal.width() if tty else None)
        self.line_seconds = time.monotonic() - now
        done = _done(trials)
        if tty:
            if text != self.last_text or not terminal.drawn() or final:
                terminal.draw(text, final=final)
        elif text != self.last_text:
            terminal.say(text)
        self.shown, self.last_text, self.last_done = now, text, done

    def line(self, trials: list, elapsed: float, *, columns: int | None = None) -> str:
        """The progress line for ``trials`` after ``elapsed`` seconds of this run, in at most
        ``columns`` (None: whole). Too long, it drops the epochs, then the best value, before it
        cuts the end: the trials done and the time left are what a long search is watched for
        (a 1,000-trial line is ~100 columns)."""
        total = max(self.total, len(trials))
        done = sum(trial.status == Trial.TERMINATED for trial in trials)
        errored = sum(trial.status == Trial.ERROR for trial in trials)
        running = sum(trial.status == Trial.RUNNING for trial in trials)
        epochs = _epochs(trials)
        unseen = (total - len(trials)) * self.epochs({})  # trials Tune has not made yet
        budget = sum(self.epochs(t.config) for t in trials) + unseen
        finished = (Trial.TERMINATED, Trial.ERROR)
        # The epochs trials not yet finished, or not yet started, may still train (ASHA may
        # stop them sooner).
        to_go = unseen + sum(
            max(0, self.epochs(t.config) - _epochs([t])) for t in trials if t.status not in finished
        )
        trials_part = (
            f"trials {done + errored}/{total} done"
            + (f" ({errored} errored)" if errored else "")
            + f", {running} running"
        )
        best = self.best(trials)
        clock = f"{_clock(elapsed)} elapsed"
        left = [self.time_budget_s - elapsed] if self.time_budget_s else []
        # The epochs this run (not the one a resume continues) trained, at the rate it did.
        run = epochs - (self.start_epochs or 0)
        if run > 0 and elapsed > 0:
            left.append(to_go * elapsed / run)
        if left and to_go:
            clock += f", ~{_clock(max(0.0, min(left)))} left"
        parts = {  # in the order shown; dropped, when too long, in the order DROPPED
            "trials": trials_part,
            "epochs": f"epochs {epochs}/{budget}",
            "best": None if best is None else f"best {self.metric} {best:.4f}",
            "clock": clock,
        }
        text = " · ".join(part for part in parts.values() if part)
        for dropped in DROPPED if columns is not None else ():
            if len(text) <= columns:
                break
            parts[dropped] = None
            text = " · ".join(part for part in parts.values() if part)
        return text if columns is None else terminal.fit(text, columns)

    def epochs(self, config: dict[str, Any]) -> int:
        """The epochs a trial of ``config`` runs at most ({}: a config not sampled yet)."""
        return trainable_module(self.trainable).epochs(config, max_epochs=self.max_epochs)

    def best(self, trials: list) -> float | None:
        """The best value of the metric any trial reported; rejected trials never count."""
        values = [
            trial.metric_analysis[self.metric][self.mode]
            for trial in trials
            if self.metric in trial.metric_analysis
            and trial_report.status(trial.last_result) != Status.REJECTED
        ]
        return Objective(self.metric, self.mode).best(values) if values else None


def _done(trials: list) -> int:
    return sum(trial.status in (Trial.TERMINATED, Trial.ERROR) for trial in trials)


def _epochs(trials: list) -> int:
    return sum((trial.last_result or {}).get("training_iteration", 0) for trial in trials)


class TrialLines(tune.Callback):
    """``trial 3f2a_00004 early_stopped: val_acc 0.9312 after 3 epochs | optimizer.sgd.lr=0.0021``

    Printed by the driver as each trial ends, so a long search shows steady progress between
    tables; and ``trial 3f2a_00004 warning: <text>`` for each warning a trial reports. Holds
    only plain values: Tune pickles its callbacks into the experiment state.

    On a terminal the config is cut to its width (a wrapped line buries the next ones), ending
    in an ellipsis; whole with ``verbose``, off a terminal (a log wraps nothing), and always in
    MLflow (the trial's params).
    """

    def __init__(
        self,
        metric: str,
        mode: str,
        space: space_lang.Group,
        *,
        verbose: bool = False,
        tty: bool | None = None,  # None: whether stdout is a terminal when a trial ends
    ) -> None:
        self.metric = metric
        self.mode = mode
        self.space = space
        self.verbose = verbose
        self.tty = tty
        self.sampled = space_lang.sampled_keys(space)
        # Tune trial id -> its metric's last LAST_EPOCHS values: the value a line shows is the
        # one the trial ranks by (tuner.core.selection), not its best epoch.
        self.recent: dict[str, list[float]] = {}
        self.many = False  # more than MANY_TRIALS: lines for new bests and errors only
        self.best: float | None = None  # the best final value a finished trial's line showed

    def setup(self, total_num_samples: int | None = None, **info: Any) -> None:
        self.many = (total_num_samples or 0) > MANY_TRIALS
        if self.many:
            terminal.say(
                f"{total_num_samples} trials: a line for each new best and each error; "
                "every trial is in MLflow (tuner best NAME --top N)"
            )

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        value = result.get(self.metric)
        if isinstance(value, int | float):
            self.recent[trial.trial_id] = with_latest(self.recent.get(trial.trial_id, []), value)
        # A trial's warnings come in its results (see deep.TrainingRun.warn): a worker's own stderr
        # reaches no one in CI, under nohup or `ray job submit`.
        for text in TrialReport.read(result).warnings:
            terminal.say(f"trial {trial.trial_id} warning: {text}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        status = trial_report.status(trial.last_result)
        value = self.value(trial)
        best = status != Status.REJECTED and not math.isnan(value)
        objective = Objective(self.metric, self.mode)
        best = best and (self.best is None or objective.better(value, self.best))
        if best:
            self.best = value
        if best or not self.many:
            terminal.say(self.line(trial, status, self.width()))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        terminal.say(self.line(trial, Status.ERRORED, self.width()))

    def width(self) -> int | None:
        """The columns a trial's line may fill; None: no limit."""
        tty = sys.stdout.isatty() if self.tty is None else self.tty
        return terminal.width() if tty and not self.verbose else None

    def value(self, trial: Any) -> float:
        """The final value ``trial`` ranks by (nan: none reported)."""
        last = (trial.last_result or {}).get(self.metric)
        return final_value(self.recent.get(trial.trial_id) or ([last] if last is not None else []))

    def line(self, trial: Any, status: str, width: int | None = None) -> str:
        """The line of a finished ``trial``; its config cut to fit ``width`` columns (never
        the outcome: an error is read whole)."""
        value = self.value(trial)
        epochs = (trial.last_result or {}).get("training_iteration", 0)
        if status == Status.ERRORED:
            outcome = error_line(trial)
        elif status == Status.REJECTED:
            outcome = TrialReport.read(trial.last_result).reason
        elif math.isnan(value):
            outcome = f"no {self.metric} reported"
        else:
            outcome = f"{self.metric} {value:.4f} after {epochs} epoch{'s' * (epochs != 1)}"
        params = space_lang.trial_params(self.space, trial.config)
        shown = [key for key in self.sampled if key in params]
        config = "  ".join(f"{key}={short_value(str(params[key]))}" for key in shown)
        head = f"trial {trial.trial_id} {status}: {outcome} | "
        if width is not None:
            config = terminal.fit(config, width - len(head))
        return head + config
