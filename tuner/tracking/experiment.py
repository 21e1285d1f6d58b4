"""The parent run of one search and what is written to it."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Run, RunTag
from mlflow.tracking import MlflowClient

from tuner.core.errors import UsageError
from tuner.core.secrets import mask_secrets
from tuner.core.terminal import say
from tuner.tracking.files import SearchFiles, artifact_location
from tuner.tracking.journal import Journal
from tuner.tracking.tags import (
    PARENT_ROLE,
    REPEAT,
    TRUE,
    SearchTags,
    Status,
    Tag,
    child_runs,
    latest_parent_run,
    new_child_run,
)
from tuner.tracking.values import as_params, metrics_now, now_ms
from tuner.tracking.writer import TrialRun, Write, flush_writes, write_journal, writer


class Experiment:
    """The parent run of one `tuner run` (or of the run it resumes) and what is written to it."""

    def __init__(
        self, tracking_uri: str, experiment_name: str, artifacts: str | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment_name)
        self.experiment_id = (
            found.experiment_id
            if found
            else self.client.create_experiment(
                experiment_name,
                artifact_location=artifact_location(tracking_uri, experiment_name, artifacts),
            )
        )
        self.name = experiment_name
        # An experiment keeps the artifact location it was created with.
        self.artifacts = self.client.get_experiment(self.experiment_id).artifact_location
        self.parent_id = ""
        # The search's files (its journal keeps the writes the store did not take): set once
        # its Tune folder is known, by the runner or by find_resumable.
        self.files: SearchFiles | None = None

    @property
    def journal(self) -> Path | None:
        return self.files.journal if self.files else None

    def start(self, spec_path: Path, search: SearchTags) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.name,
            tags={Tag.ROLE: PARENT_ROLE, **search.tags()},
        )
        self.parent_id = run.info.run_id
        # A masked copy, not the file: a spec may hold credentials (a tracking URI's password).
        with tempfile.TemporaryDirectory() as directory:
            copy = Path(directory) / spec_path.name  # same name: readers look for spec/<file>
            copy.write_text(mask_secrets(spec_path.read_text()))
            self.client.log_artifact(self.parent_id, str(copy), artifact_path="spec")
        return self.parent_id

    def find_resumable(self, images: str, storage: str | None = None) -> str:
        """Find the run to continue, and the folder of its Tune state (``SearchTags.folder``).
        It is the latest parent run, once what its stopped driver kept in the journal is
        written (all of it may be: the finished search of a server that was down); it must not
        have finished and must have started on the same ``images`` per split (Splits.sizes),
        since a resume that loads other data (a changed dataset, an override not applied) would
        mix two searches in one run."""
        parent = latest_parent_run(self.client, self.experiment_id)
        if parent is not None:
            folder = SearchTags.of(parent).folder(storage)
            self.files = SearchFiles(folder)
            if Journal(self.journal).finishes(parent.info.run_id):
                flags = f" --storage {storage}" if storage else ""
                raise UsageError(
                    f"{self.name!r} finished, but its last MLflow writes were not written (its "
                    "tracking server was down, or it stopped while writing them): nothing to "
                    f"resume; write what it kept in {self.journal} (and log its plots and "
                    f"register its model) with: python -m tuner sync {self.name} --tracking-uri "
                    f"{mask_secrets(self.tracking_uri)}{flags}"
                )
            written = write_journal(self.tracking_uri, self.journal)
            if written:
                say(f"tuner: wrote the {written} MLflow writes kept in {self.journal}")
            parent = self.client.get_run(parent.info.run_id)  # as the journal left it
        if parent is None or parent.info.status == "FINISHED":
            raise UsageError(
                f"experiment {self.name!r} has no unfinished run to resume in "
                f"{mask_secrets(self.tracking_uri)}; start a new one without --resume"
            )
        started_on = SearchTags.of(parent).images
        if started_on != images:
            raise UsageError(
                f"cannot resume {self.name!r}: it started on {started_on} images, this data has "
                f"{images}; resume with the data and overrides it started with"
            )
        self.parent_id = parent.info.run_id
        return folder

    def resume(self) -> None:
        """Continue the run find_resumable found."""
        self.client.update_run(self.parent_id, "RUNNING")
        self.client.set_tag(self.parent_id, Tag.STATUS, Status.RUNNING)

    def restart(self) -> None:
        """Continue the run find_resumable found, whose search starts again from its first trial
        (Tune never saved its state): the runs of the trials it started are deleted (MLflow
        keeps them as deleted runs), since no resumed trial will ever finish them; so are the
        points of its anytime curve, from now on."""
        self.resume()
        self.client.set_tag(self.parent_id, Tag.CURVE_SINCE, str(now_ms()))
        for run in child_runs(self.client, self.experiment_id, self.parent_id):
            self.client.delete_run(run.info.run_id)

    def children(self) -> list[Run]:
        self.flush()  # the trials' last writes may still be queued
        return child_runs(self.client, self.experiment_id, self.parent_id)

    def trial_run(self, trial_id: str) -> TrialRun:
        return TrialRun(self.experiment_id, self.parent_id, trial_id)

    def start_writer(self) -> None:
        """Start the background writer now, not at the first write: its first process takes
        a second or two to start (it imports MLflow), which Tune's loop would wait for."""
        writer(self.tracking_uri, self.journal)

    def put(self, write: Write) -> None:
        """Queue a write to the background writer (kept in the journal until it is written)."""
        writer(self.tracking_uri, self.journal).put(write)

    def flush(self, *, close: bool = False) -> int:
        """Wait for the queued writes (``flush_writes``); how many are kept, unwritten: as
        many as the server, down, did not take."""
        return flush_writes(self.tracking_uri, self.journal, close=close)

    def mark_best(self, trial_id: str) -> None:
        self.put(Write(self.trial_run(trial_id), tags=[RunTag(Tag.BEST, TRUE)]))

    def mark_pareto(self, tests: Mapping[str, Mapping[str, float]]) -> None:
        """Tag the trials on the Pareto front of a multi-objective search (Tune trial ids), each
        with the test metrics of its best checkpoint ({}: not tested)."""
        for trial_id, metrics in tests.items():
            pareto = [RunTag(Tag.PARETO, TRUE)]
            self.put(Write(self.trial_run(trial_id), metrics=metrics_now(metrics), tags=pareto))

    def finish(
        self,
        best_config: Mapping[str, Any],
        best_params: Mapping[str, Any],
        best_metrics: Mapping[str, float],
        test_metrics: Mapping[str, float],
        *,
        final: str,
    ) -> None:
        """Record the search's outcome: ``best_params`` are the best config under the names
        of ``space.named``; ``final`` says which model the test metrics are of."""
        best = {f"best.{key}": value for key, value in best_params.items()}
        metrics = metrics_now({**best_metrics, **test_metrics})
        tags = [RunTag(Tag.FINAL, final), RunTag(Tag.STATUS, Status.COMPLETED)]
        config = json.dumps(dict(best_config), indent=2)  # as MlflowClient.log_dict writes it
        self.put(
            Write(
                self.parent_id,
                metrics=metrics,
                params=as_params(best),
                tags=tags,
                texts={"best_config.json": config},
                status="FINISHED",
                end_time=now_ms(),
            )
        )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags of the parent run."""
        self.put(Write(self.parent_id, tags=[RunTag(k, v) for k, v in tags.items()]))

    def log_repeat(
        self,
        trial_id: str,
        seed: int,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        *,
        chosen: bool,
    ) -> None:
        """One finished repeat of trial ``trial_id``'s config with ``seed``, as a child run."""
        tags = {
            Tag.ROLE: REPEAT,
            Tag.FINAL: REPEAT,
            Tag.TRIAL_ID: trial_id,
            Tag.SEED: str(seed),
            Tag.CHOSEN: str(chosen).lower(),  # TRUE or "false"
        }
        name = f"repeat_{trial_id}_seed{seed}"
        run_id = new_child_run(self.client, self.experiment_id, self.parent_id, name, tags)
        self.put(
            Write(
                run_id,
                metrics=metrics_now(metrics),
                params=as_params(params),
                status="FINISHED",
                end_time=now_ms(),
            )
        )

    def log_metrics(self, metrics: Mapping[str, float], *, step: int = 0) -> None:
        """Metrics of the parent run, all at one time; a later ``step`` keeps the earlier
        values in the metrics' history (MLflow shows the latest)."""
        self.put(Write(self.parent_id, metrics=metrics_now(metrics, step)))

    def interrupt(self) -> None:
        """Mark the parent and its running trials as killed; `--resume` picks them up again.
        (With the server down, only the parent: a resume takes trials still running as
        interrupted.)"""
        stopped = [RunTag(Tag.STATUS, Status.INTERRUPTED)]
        if not self.flush():
            for run in child_runs(self.client, self.experiment_id, self.parent_id):
                if run.info.status == "RUNNING":
                    trial = self.trial_run(run.data.tags[Tag.TRIAL_ID])
                    self.put(Write(trial, tags=stopped, status="KILLED", end_time=now_ms()))
        self.put(Write(self.parent_id, tags=stopped, status="KILLED", end_time=now_ms()))
        self.flush(close=True)

    def fail(self, reason: str) -> None:
        if self.parent_id:
            tags = [RunTag(Tag.ERROR, reason[:5000]), RunTag(Tag.STATUS, Status.ERRORED)]
            self.put(Write(self.parent_id, tags=tags, status="FAILED", end_time=now_ms()))
        self.flush(close=True)
