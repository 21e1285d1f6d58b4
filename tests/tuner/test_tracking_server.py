"""A team's setup: a real `mlflow server` (sqlite backend, artifacts proxied to its
``--artifacts-destination``) on a loopback port, a digits search logged to it over HTTP, and
everything read back over HTTP: runs, tags, metrics, artifacts, the registered model, and
`tuner best / report / compare / predict`.

Only the server process touches its folder: Python's audit hooks watch every file this process
opens or lists while tuner and MLflow's client work, and a test fails if one lies under it. The
last test looks there, to show the artifacts are where the server was told to keep them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import pytest
from mlflow.entities import Run
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
from mlflow.tracking import MlflowClient

from tests.helpers import DIGITS_SEARCH, Store
from tests.processes import free_port, stop_group, wait_until_answers
from tuner.commands.cli import main
from tuner.tracking.records import latest_parent, trials_of
from tuner.tracking.tags import PARENT_ROLE, TRIAL_ROLE, TRUE, SearchTags, Status, Tag

pytestmark = pytest.mark.slow

REGISTRY_MARKER = "model/registered_model_meta"  # written by MLflow, not by tuner
SERVER_START_S = 120  # the server migrates its sqlite schema first: 5-60 s on a loaded machine
NAME = "digits_search"  # DIGITS_SEARCH as it is, so its artifacts compare with the sqlite run's
TRIALS = 3  # --num-samples, as the shared sqlite search (conftest.digits_search) runs it
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Python audit events that name a file this process opens, lists, copies or moves.
FILE_EVENTS = ("open", "os.", "shutil.", "sqlite3.", "glob.", "pathlib.", "tempfile.")


# ---------------------------------------------------------------------------------------------
# Watching this process's file operations
# ---------------------------------------------------------------------------------------------


@dataclass
class Watch:
    """File operations of this process that named a path under ``folder``, while it watches."""

    folder: str | None = None
    seen: list[str] = field(default_factory=list)

    def __call__(self, event: str, args: tuple) -> None:
        if self.folder is None or not event.startswith(FILE_EVENTS):
            return
        for arg in args:
            if isinstance(arg, os.PathLike):
                arg = os.fspath(arg)
            if isinstance(arg, bytes):
                arg = arg.decode(errors="replace")
            if isinstance(arg, str) and self.folder in arg:
                self.seen.append(f"{event}: {arg}")


WATCH = Watch()
sys.addaudithook(WATCH)  # for good (Python has no way to remove one); idle unless watching


@contextlib.contextmanager
def watching(folder: Path) -> Iterator[list[str]]:
    """Record what this process names under ``folder`` in the block (a file URI counts too)."""
    WATCH.folder, WATCH.seen = str(folder), []
    try:
        yield WATCH.seen
    finally:
        WATCH.folder = None


# ---------------------------------------------------------------------------------------------
# The server, and one search logged to it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    folder: Path  # the server's cwd: its sqlite database and --artifacts-destination
    artifacts: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """`mlflow server` on a free loopback port, stopped (its whole process group) at the end."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    artifacts = folder / "artifacts"
    log = tmp_path_factory.mktemp("mlflow_server_log") / "server.log"  # outside its folder
    port = free_port()
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
        *("--backend-store-uri", f"sqlite:///{folder / 'server.db'}"),
        *("--artifacts-destination", str(artifacts)),  # proxied: clients never see this path
        *("--workers", "1"),  # the default 4 would crowd a small machine's CPUs
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=folder,  # whatever the server writes by default lands there too, not in the repo
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            start_new_session=True,  # its own process group: the uvicorn worker goes with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(process, f"{url}/health", log, SERVER_START_S)
        yield Server(url, folder, artifacts)
    finally:
        stop_group(process)


@dataclass(frozen=True)
class Search:
    """The search `tuner run` logged to the server, and what the client saw of it."""

    server: Server
    cwd: Path  # the client's working directory: it must hold no MLflow files afterwards
    spec: Path
    output: str  # what `tuner run` printed
    touched: list[str]  # the server's files this process named during the run (none)

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.server.url)

    @property
    def parent(self) -> Run:
        return latest_parent(self.client, NAME)


@pytest.fixture(scope="module")
def search(ray_session, server, tmp_path_factory) -> Search:
    """DIGITS_SEARCH with --num-samples 3, run through the CLI with --tracking-uri http://..."""
    cwd = tmp_path_factory.mktemp("server_client")
    spec = cwd / f"{NAME}.yaml"
    spec.write_text(DIGITS_SEARCH)
    command = ["run", str(spec), "--tracking-uri", server.url, "--storage", str(cwd / "ray")]
    printed = io.StringIO()
    with (
        pytest.MonkeyPatch.context() as patch,
        watching(server.folder) as touched,
        contextlib.redirect_stdout(printed),
    ):
        patch.chdir(cwd)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main([*command, "--num-samples", str(TRIALS)]) == 0
    return Search(server, cwd, spec, printed.getvalue(), list(touched))


@pytest.fixture(autouse=True)
def in_client_cwd(search, monkeypatch) -> None:
    """Each test reads from the client's folder, with no MLFLOW_TRACKING_URI of the caller's."""
    monkeypatch.chdir(search.cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _files(location: str, tracking_uri: str, path: str | None = None) -> dict[str, int]:
    """Every file under an artifact location (a run's, a logged model's): path -> bytes."""
    repository = get_artifact_repository(location, tracking_uri=tracking_uri)
    files = {}
    for artifact in repository.list_artifacts(path):
        if artifact.is_dir:
            files |= _files(location, tracking_uri, artifact.path)
        else:
            files[artifact.path] = artifact.file_size
    return files


def _sizes(folder: Path) -> dict[str, int]:
    """Every file under a local folder: its path relative to the folder -> bytes."""
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()
    }


def _model_location(client: MlflowClient) -> str:
    """Where the registered model's files are: MLflow 3 keeps a logged model apart from its run."""
    (version,) = client.search_model_versions(f"name = '{NAME}'")
    return client.get_logged_model(version.source.removeprefix("models:/")).artifact_location


def _parent_files(tracking_uri: str) -> dict[str, int]:
    """The files of NAME's parent run as its UI shows them: its own, and the model's under model/.

    Listed from each location, not with ``MlflowClient.list_artifacts(run_id, "model")``: MLflow
    3.17 looks the logged model up in the process's default store there, not the client's.
    """
    client = MlflowClient(tracking_uri)
    own = _files(latest_parent(client, NAME).info.artifact_uri, tracking_uri)
    model = _files(_model_location(client), tracking_uri)
    return own | {f"model/{path}": size for path, size in model.items()}


# ---------------------------------------------------------------------------------------------
# Runs, tags and metrics
# ---------------------------------------------------------------------------------------------


def test_the_run_spoke_only_http(search):
    assert search.touched == []
    assert f"store {search.server.url}" in search.output  # the closing summary names the server
    experiment = search.client.get_experiment_by_name(NAME)
    # The server chose where artifacts go (a proxied URI), not tuner (a path beside a store).
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    assert f"artifacts: {experiment.artifact_location}" in search.output
    repository = get_artifact_repository(
        search.parent.info.artifact_uri, tracking_uri=search.server.url
    )
    assert isinstance(repository, HttpArtifactRepository)  # uploads and downloads go over HTTP


def test_one_parent_with_the_search_tags_and_one_child_per_trial(search):
    client, parent = search.client, search.parent
    experiment_id = parent.info.experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    parents = [run for run in runs if run.data.tags.get(Tag.ROLE) == PARENT_ROLE]
    children = [run for run in runs if run.data.tags.get(Tag.ROLE) == TRIAL_ROLE]
    assert [run.info.run_id for run in parents] == [parent.info.run_id]
    assert len(runs) == 1 + TRIALS and len(children) == TRIALS
    assert parent.info.status == "FINISHED" and parent.info.run_name == NAME
    assert parent.data.tags[Tag.STATUS] == Status.COMPLETED
    assert parent.data.tags[Tag.FINAL] == "last checkpoint"
    tags = SearchTags.of(parent)
    assert (tags.metric, tags.mode, tags.spec) == ("val_acc", "max", f"{NAME}.yaml")
    assert tags.overrides == (f"search.num_samples={TRIALS}",)
    assert tags.storage == str(search.cwd / "ray" / NAME)  # Ray's storage stays the client's
    assert {"model.width", "optimizer.name", "batch_size"} <= set(tags.sampled)
    assert 0.5 < parent.data.metrics["test_acc"] <= 1.0
    assert {child.data.tags["mlflow.parentRunId"] for child in children} == {parent.info.run_id}
    assert len({child.data.tags[Tag.TRIAL_ID] for child in children}) == TRIALS
    assert sum(child.data.tags.get(Tag.BEST) == TRUE for child in children) == 1
    for child in children:
        assert child.data.tags[Tag.STATUS] in {Status.COMPLETED, Status.EARLY_STOPPED}
        assert child.info.status == "FINISHED"
        assert child.data.params["model.name"] == "simple_cnn"


def test_per_epoch_metrics_have_steps_one_to_n(search):
    client = search.client
    for trial in trials_of(client, search.parent):
        for key in ("train_loss", "val_loss", "val_acc"):
            steps = [m.step for m in client.get_metric_history(trial.run_id, key)]
            assert steps == list(range(1, trial.epochs + 1)), (trial.trial_id, key)
        assert (trial.epochs == 3) == (trial.status == Status.COMPLETED)  # scheduler.max_epochs
        assert len(client.get_metric_history(trial.run_id, "model_params")) == 1


# ---------------------------------------------------------------------------------------------
# Artifacts and the registered model
# ---------------------------------------------------------------------------------------------


def test_the_parent_holds_what_a_sqlite_run_holds(search, digits_search: Store):
    """The same spec and flags logged to a sqlite store (conftest's shared search) leave the
    same artifact files: plots, tables, the spec, the best config and the model."""
    with watching(search.server.folder) as touched:
        over_http = _parent_files(search.server.url)
    assert touched == []
    # MLflow adds registered_model_meta to a local model's folder once something loads it from
    # the registry (the sqlite search is shared with other tests); it is not tuner's file.
    local = {path for path in _parent_files(digits_search.uri) if path != REGISTRY_MARKER}
    assert set(over_http) - {REGISTRY_MARKER} == local
    assert f"spec/{NAME}.yaml" in over_http and "best_config.json" in over_http
    tables = {"results/trials.csv", "results/confusion_matrix.json"}
    # The registered model: its code (serving.py), and the trained network inside it.
    model = {"model/MLmodel", "model/serving.py", "model/artifacts/model/data/model.pt2"}
    assert tables | model <= set(over_http)
    assert sum(path.startswith("plots/") and path.endswith(".png") for path in over_http) == 7


def test_every_artifact_downloads_over_http(search, tmp_path):
    client, run_id = search.client, search.parent.info.run_id
    (tmp_path / "run").mkdir()
    (tmp_path / "model").mkdir()
    with watching(search.server.folder) as touched:
        local = Path(client.download_artifacts(run_id, "", str(tmp_path / "run")))
        model = get_artifact_repository(_model_location(client), tracking_uri=search.server.url)
        model_files = Path(model.download_artifacts("", str(tmp_path / "model")))
    assert touched == []
    downloaded = _sizes(local) | {f"model/{p}": size for p, size in _sizes(model_files).items()}
    assert downloaded == _parent_files(search.server.url)  # every file, whole
    assert (local / "spec" / f"{NAME}.yaml").read_text() == search.spec.read_text()
    for path in (local / "plots").iterdir():
        assert path.read_bytes().startswith(PNG_MAGIC), path.name
    best = json.loads((local / "best_config.json").read_text())
    assert best["model"]["name"] == "simple_cnn"


def test_the_best_model_is_registered_on_the_server(search):
    client, parent = search.client, search.parent
    versions = client.search_model_versions(f"name = '{NAME}'")
    assert len(versions) == 1
    (version,) = versions
    assert version.run_id == parent.info.run_id and version.status == "READY"
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.artifact_location.startswith("mlflow-artifacts:")
    assert str(search.server.folder) not in logged.artifact_location


# ---------------------------------------------------------------------------------------------
# tuner's reading commands, over HTTP
# ---------------------------------------------------------------------------------------------


def test_tuner_best_reads_the_server_named_in_the_environment(search, monkeypatch, capsys):
    """README's team set-up: MLFLOW_TRACKING_URI points every command at the server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", search.server.url)
    with watching(search.server.folder) as touched:
        assert main(["best", NAME, "--json"]) == 0
    assert touched == []
    report = json.loads(capsys.readouterr().out)
    assert report["run_id"] == search.parent.info.run_id
    assert len(report["trials"]) == TRIALS
    assert report["trials"][0]["best"] is True
    assert report["metrics"]["test_acc"] == search.parent.data.metrics["test_acc"]


def test_tuner_report_downloads_plots_and_spec_over_http(search, tmp_path, capsys):
    command = ["report", NAME, "--out", str(tmp_path), "--tracking-uri", search.server.url]
    with watching(search.server.folder) as touched:
        assert main(command) == 0
    assert touched == []
    path = Path(capsys.readouterr().out.strip())
    assert path == tmp_path / f"{NAME}.html"
    page = path.read_text(encoding="utf-8")
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 7
    assert "loguniform: [1e-2, 1e-1]" in page  # the spec artifact, verbatim
    assert search.parent.info.run_id in page


def test_tuner_ui_and_the_summary_point_at_the_servers_own_ui(search, capsys):
    assert f"  browse: {search.server.url}/ (the server's UI)" in search.output
    with watching(search.server.folder) as touched:
        assert main(["ui", NAME, "--tracking-uri", search.server.url]) == 0  # starts nothing
    assert touched == []
    experiment = search.parent.info.experiment_id
    assert capsys.readouterr().out == (
        f"MLflow UI: {search.server.url}/#/experiments/{experiment}/runs"
        "?workflowType=machine_learning&viewStateShareKey=tuner\n"
    )


def test_tuner_compare_reads_both_runs_over_http(search, capsys):
    command = ["compare", NAME, NAME, "--tracking-uri", search.server.url]
    with watching(search.server.folder) as touched:
        assert main(command) == 0
    assert touched == []
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    run_id = search.parent.info.run_id
    assert rows["run"] == [run_id, run_id]
    assert rows["trials"] == [str(TRIALS), str(TRIALS)]
    test_acc = float(rows["test_acc"][0])
    assert test_acc == pytest.approx(search.parent.data.metrics["test_acc"], abs=1e-3)


def test_tuner_predict_loads_the_registered_model_over_http(search, digits, tmp_path, capsys):
    images, labels = digits[0][:30], digits[1][:30]
    paths = []
    for index, image in enumerate(images):
        path = tmp_path / f"digit_{index}.png"
        assert cv2.imwrite(str(path), image[0])
        paths.append(str(path))
    command = ["predict", NAME, *paths, "--tracking-uri", search.server.url]
    with watching(search.server.folder) as touched:
        assert main(command) == 0
    assert touched == []
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [row[0] for row in rows] == paths
    assert all(0.0 < float(probability) <= 1.0 for _, _, probability in rows)
    right = sum(name == str(label) for (_, name, _), label in zip(rows, labels, strict=True))
    assert right > len(paths) / 2, f"{right} of {len(paths)} right"  # test_acc is ~0.95


# ---------------------------------------------------------------------------------------------
# Where the files are (the server's folder, looked at once, at the end)
# ---------------------------------------------------------------------------------------------


def test_artifacts_are_under_the_servers_artifacts_destination(search):
    client, parent = search.client, search.parent
    run_files = _files(parent.info.artifact_uri, search.server.url)
    model_location = _model_location(client)
    model_files = _files(model_location, search.server.url)
    # No MLflow store or artifact folder beside the client, where MLflow's defaults put them.
    assert not {"mlruns", "mlartifacts", "mlflow.db"} & {p.name for p in search.cwd.iterdir()}
    # The server's proxied layout: <destination>/<experiment id>/<run id>/artifacts/<path>, and
    # <destination>/<experiment id>/models/<model id>/artifacts/<path> for the logged model.
    experiment = search.server.artifacts / parent.info.experiment_id
    assert _sizes(experiment / parent.info.run_id / "artifacts") == run_files
    model_folder = model_location.removeprefix("mlflow-artifacts:/")
    assert model_folder.startswith(f"{parent.info.experiment_id}/models/m-")
    assert _sizes(search.server.artifacts / model_folder) == model_files
    assert not (search.server.folder / "mlruns").exists()  # nothing in the server's own default
    assert not (search.server.folder / "mlartifacts").exists()
