"""The MLflow UI on a search: which page `tuner ui` opens, the server's process (quiet unless
asked), and waiting until it answers.

MLflow 3.17's UI picks its landing page from a "workflow type" it keeps in the browser
(default: GenAI, whose overview shows traces and an issue detector), not from the experiment's
``mlflow.experimentKind`` tag; the ``workflowType`` URL parameter overrides it. The runs table's
sort, columns and column order come from a "shared view": a JSON state stored as the experiment
tag ``mlflow.sharedViewState.<key>`` and named by the URL parameter ``viewStateShareKey``.
Sorted by a metric rather than by start time, the table lists trials flat instead of folding
them under their parent run.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tuner.core.selection import final_key
from tuner.tracking.records import latest_parent
from tuner.tracking.store import unanswered
from tuner.tracking.tags import SearchTags, Tag, latest_parent_run

VIEW_KEY = "tuner"  # the shared view's name: experiment tag mlflow.sharedViewState.tuner
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
POLL_S = 0.5  # between tries of the server's /health while it starts
KEPT_LINES = 30  # of the server's own output, shown when it fails (a port taken, a bad store)


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # how the runs table names a column (and a sort key)


def view_state(parent: Run) -> dict[str, object]:
    """The runs table for a search: trials flat, best first by the search metric; its best,
    last and test accuracies, each trial's status, its sampled parameters, the logged model."""
    search = SearchTags.of(parent)
    # Trials rank by their final value (tuner.core.selection); the parent's best_ is the chosen
    # one's.
    keys = [final_key(search.metric), f"best_{search.metric}", search.metric, "val_acc", "test_acc"]
    metrics = dict.fromkeys(keys)
    columns = [_column("metrics", key) for key in metrics]
    columns.append(_column("tags", Tag.STATUS))
    columns += [_column("params", key) for key in search.sampled]
    columns.append(_column("attributes", "Models"))
    return {
        "orderByKey": columns[0],
        "orderByAsc": not search.objective.maximize,
        "selectedColumns": columns,
        "columnOrder": columns,
    }


def runs_view(client: MlflowClient, experiment_name: str | None) -> str:
    """The UI route (after ``#``) of an experiment's runs as `view_state` lays them out, for its
    latest search; writes that state as an experiment tag. Without a name: the experiment of
    the store's latest search, or the experiments list when there is none."""
    if experiment_name is None:
        parent = _latest_search(client)
        if parent is None:
            return "/experiments?workflowType=machine_learning"
    else:
        parent = latest_parent(client, experiment_name)  # UsageError listing the known names
    experiment = parent.info.experiment_id
    client.set_experiment_tag(experiment, VIEW_TAG, json.dumps(view_state(parent)))
    return (
        f"/experiments/{experiment}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    )


def _latest_search(client: MlflowClient) -> Run | None:
    parents = (latest_parent_run(client, e.experiment_id) for e in client.search_experiments())
    found = [run for run in parents if run is not None]
    return max(found, key=lambda run: run.info.start_time, default=None)


class Server:
    """`mlflow ui` in a process of its own. Its output (MLflow 3's deprecation warnings,
    uvicorn's start-up and shutdown lines: some 26 lines before tuner's address) goes to the
    terminal only when ``verbose``; otherwise its last KEPT_LINES are kept, to say why it failed.
    """

    def __init__(self, command: Sequence[str], *, verbose: bool) -> None:
        self.kept: deque[str] = deque(maxlen=KEPT_LINES)
        if verbose:  # the terminal's own streams, as a server run by hand
            self.process = subprocess.Popen(command)
            self._reader = None
            return
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one stream: its lines in the order it wrote them
            text=True,
            errors="replace",
        )
        # Read as it writes, for as long as it runs: a pipe left full would stall the server.
        self._reader = threading.Thread(target=self._keep, daemon=True)
        self._reader.start()

    def _keep(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.kept.append(line.rstrip("\n"))

    def output(self) -> str:
        """The server's last lines (none when ``verbose``: they went to the terminal), once it
        has exited."""
        if self._reader is not None:
            self._reader.join(timeout=5)  # the pipe closes as the server exits
        return "\n".join(self.kept)


def wait_until_answering(server: subprocess.Popen, url: str) -> bool:
    """Poll ``url`` until it answers HTTP (True) or ``server`` exits first (False)."""
    while server.poll() is None:
        if unanswered(url) is None:
            return True
        time.sleep(POLL_S)
    return False


__all__ = ["Server", "runs_view", "view_state", "wait_until_answering"]
