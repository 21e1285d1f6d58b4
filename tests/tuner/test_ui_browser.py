"""The MLflow UI as a person sees it: `tuner ui` on a finished run, rendered by headless Chromium.

Needs Debian's ``chromium`` package (``.ci/run`` installs it); nothing is installed or fetched at
test time, and the browser reaches only the UI on a loopback port. The screenshot is left in the
test's tmp dir (``ui.png``) for people to look at.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.processes import free_port, stop_group
from tuner.tracking.records import latest_parent, trials_of
from tuner.tracking.tags import SearchTags, Tag

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UI_START_S = 120  # the MLflow server takes 5-60 s to answer, depending on the machine's load
# Quiet, sandboxed-from-the-network Chromium: no updates, no sync, no QUIC, a throwaway profile.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in CI containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # loopback only, nothing else
)
RENDER_BUDGETS_MS = (15_000, 40_000)  # virtual time for the React app; the second is a retry


@dataclass
class UI:
    url: str  # the view `tuner ui` printed
    root: str  # the server's address
    uri: str
    client: MlflowClient
    tmp: Path


@pytest.fixture(scope="module")
def ui(digits_search, tmp_path_factory):
    """The shared finished 3-trial search, and `tuner ui digits_search` serving its store on a
    free port; ``url`` is the view it printed."""
    tmp, uri = tmp_path_factory.mktemp("ui"), digits_search.uri
    flags = ["--port", str(free_port()), "--tracking-uri", uri]
    server = subprocess.Popen(
        [sys.executable, "-m", "tuner", "ui", "digits_search", *flags],
        cwd=digits_search.tmp,  # where the search ran: MLflow's relative artifact paths resolve
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        start_new_session=True,  # its own process group: the uvicorn workers go with it
    )
    try:
        url = _printed_url(server)
        # Printed only once the server answers: the page is there at once, no retries.
        with urllib.request.urlopen(url.partition("#")[0], timeout=30) as response:
            assert response.status == 200
        yield UI(url, url.partition("/#")[0], uri, MlflowClient(uri), tmp)
    finally:
        stop_group(server)


def _printed_url(server: subprocess.Popen) -> str:
    """The address `tuner ui` prints (its only line: the server's own come with --verbose)."""
    lines: queue.Queue[str] = queue.Queue()
    read = threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True)
    read.start()
    deadline = time.monotonic() + UI_START_S
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
        except queue.Empty:
            pytest.fail(f"tuner ui printed no address in {UI_START_S} s")
        if line.startswith("MLflow UI for "):
            return line.split(": ", 1)[1].strip()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_rest_api_returns_every_trial(ui):
    parent = latest_parent(ui.client, "digits_search")
    trials = trials_of(ui.client, parent)
    assert len(trials) == 3
    found = _post(
        f"{ui.root}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [parent.info.experiment_id], "max_results": 1000},
    )
    runs = {run["info"]["run_id"]: run for run in found["runs"]}
    assert set(runs) == {parent.info.run_id} | {t.run_id for t in trials}
    for trial in trials:
        tags = {tag["key"]: tag["value"] for tag in runs[trial.run_id]["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags[Tag.TRIAL_ID] == trial.trial_id
        assert tags[Tag.STATUS] == trial.status
        metrics = {m["key"] for m in runs[trial.run_id]["data"]["metrics"]}
        assert {"train_loss", "val_loss", "val_acc", "final_val_acc"} <= metrics


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is not installed: apt-get install -y chromium")
    return path


def _render(url: str, tmp: Path, budget_ms: int) -> str:
    """The DOM of ``url`` after ``budget_ms`` of virtual time; a screenshot lands in tmp/ui.png."""
    done = subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp / 'chromium-profile'}",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={tmp / 'ui.png'}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


ROW = re.compile(r'role="row" row-index="(\d+)" row-id="([0-9a-f]+)"')  # AG Grid's run rows
TEST_ACC_CELL = re.compile(r'id="cell-metrics\.`test_acc`-\d+" class="ag-cell-value">([^<]*)<')


def test_chromium_shows_the_trials_sorted_by_the_metric_with_their_columns(ui):
    """The page `tuner ui NAME` prints: the experiment's runs (not MLflow 3's GenAI overview),
    trials listed flat and best first, the metric, test accuracy and sampled parameters as
    columns."""
    parent = latest_parent(ui.client, "digits_search")
    trials = trials_of(ui.client, parent)
    experiment = parent.info.experiment_id
    assert ui.url.startswith(f"{ui.root}/#/experiments/{experiment}/runs?")
    best = {t.run_id: t.value for t in trials} | {
        parent.info.run_id: parent.data.metrics["best_val_acc"]
    }
    for budget in RENDER_BUDGETS_MS:
        dom = _render(ui.url, ui.tmp, budget)
        rows = dict(ROW.findall(dom))  # row index -> run id (one per pane: the same)
        if set(best) <= set(rows.values()):
            break
    assert "<title>" in dom and "MLflow" in dom, dom[:500]
    assert "Detect Issues" not in dom  # the GenAI overview's button
    assert set(best) <= set(rows.values()), f"runs not listed flat: {sorted(rows.values())}"
    # Trials by their final value, highest first (the parent holds best_val_acc, not that key).
    ranked = [best[rows[i]] for i in sorted(rows, key=int) if rows[i] != parent.info.run_id]
    assert ranked == sorted(ranked, reverse=True)
    assert "Sort: final_val_acc" in dom
    sampled = SearchTags.of(parent).sampled
    for column in ("metrics.`final_val_acc`", "metrics.`val_acc`", "metrics.`test_acc`"):
        assert f'col-id="{column}"' in dom, column
    assert f'col-id="params.`{sampled[0]}`"' in dom  # AG Grid draws only the visible columns
    # Only the parent run has a test accuracy (its best trial's model on the test split).
    shown = [v for v in TEST_ACC_CELL.findall(dom) if v != "-"]
    assert len(shown) == 1 and abs(float(shown[0]) - parent.data.metrics["test_acc"]) < 1e-3
    # The experiment by name, in the page's breadcrumb (a link to the experiment itself).
    assert re.search(rf'href="#/experiments/{experiment}"[^>]*>(<[^>]+>)*\s*digits_search\s*<', dom)
    screenshot = ui.tmp / "ui.png"
    assert screenshot.read_bytes().startswith(PNG_MAGIC)
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
