"""The MLflow UI as a person sees it: `tuner ui` on a finished run, rendered by headless Chromium.

Needs Debian's ``chromium`` package (``.ci/run`` installs it); nothing is installed or fetched at
test time, and the browser reaches only the UI on a loopback port. The screenshot is left in the
test's tmp dir (``ui.png``) for people to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tuner.results import latest_parent, trials_of

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
    url: str
    uri: str
    client: MlflowClient
    tmp: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ui(digits_search, tmp_path_factory):
    """The shared finished 3-trial search, and `tuner ui` serving its store on a free port."""
    tmp, uri = tmp_path_factory.mktemp("ui"), digits_search.uri
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tuner", "ui", "--port", str(port), "--tracking-uri", uri],
        cwd=digits_search.tmp,  # where the search ran: MLflow's relative artifact paths resolve
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        start_new_session=True,  # its own process group: the uvicorn workers go with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        by_name = "api/2.0/mlflow/experiments/get-by-name?experiment_name=digits_search"
        _wait_for(server, f"{url}/{by_name}")
        yield UI(url, uri, MlflowClient(uri), tmp)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def _wait_for(server: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + UI_START_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            assert server.poll() is None, "tuner ui exited"
            assert time.monotonic() < deadline, f"tuner ui never answered at {url}"
            time.sleep(1)


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
        f"{ui.url}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [parent.info.experiment_id], "max_results": 1000},
    )
    runs = {run["info"]["run_id"]: run for run in found["runs"]}
    assert set(runs) == {parent.info.run_id} | {t.run_id for t in trials}
    for trial in trials:
        tags = {tag["key"]: tag["value"] for tag in runs[trial.run_id]["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["tuner.trial_id"] == trial.trial_id
        assert tags["tuner.status"] == trial.status
        metrics = {m["key"] for m in runs[trial.run_id]["data"]["metrics"]}
        assert {"train_loss", "val_loss", "val_acc", "best_val_acc"} <= metrics


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


def test_chromium_shows_the_experiment_its_parent_run_and_trial_runs(ui):
    parent = latest_parent(ui.client, "digits_search")
    runs = [(parent.info.run_id, parent.info.run_name)] + [
        (t.run_id, f"trial_{t.trial_id}") for t in trials_of(ui.client, parent)
    ]
    experiment = parent.info.experiment_id
    # Sorted by name the UI lists runs flat; by date (its default) trials fold under the parent.
    page = (
        f"{ui.url}/#/experiments/{experiment}/runs?orderByKey=attributes.run_name&orderByAsc=true"
    )
    links = {
        run_id: re.compile(
            rf'href="#/experiments/{experiment}/runs/{run_id}"[^>]*>\s*<span[^>]*>'
            rf"{re.escape(name)}</span>"
        )
        for run_id, name in runs
    }
    for budget in RENDER_BUDGETS_MS:
        dom = _render(page, ui.tmp, budget)
        missing = [run_id for run_id, link in links.items() if not link.search(dom)]
        if not missing:
            break
    assert "<title>" in dom and "MLflow" in dom, dom[:500]
    assert not missing, f"runs not listed in the rendered page: {missing}"
    # The experiment by name, in the page's breadcrumb (a link to the experiment itself).
    assert re.search(rf'href="#/experiments/{experiment}"[^>]*>(<[^>]+>)*\s*digits_search\s*<', dom)
    screenshot = ui.tmp / "ui.png"
    assert screenshot.read_bytes().startswith(PNG_MAGIC)
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
