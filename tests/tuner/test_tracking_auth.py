"""A team server that lets no one in who doesn't belong: a real `mlflow server --app-name
basic-auth` (MLflow's auth app), its users made by its admin, and tuner used against it.

With the right login (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) a search and the
reading commands work, and the password is in no file the search wrote: tuner's, MLflow's (the
server's database and artifacts) or Ray's (its logs under TMPDIR). Without a login, with a
wrong one, or as a user who may not write to the experiment: one line naming the server and
what to set or ask for, exit 2, no traceback, and Ray never starts.

`tuner run` runs as a process of its own, as a user starts it: its environment holds the login
(Ray's workers inherit it), and TMPDIR points into the test's folder, so tuner's, MLflow's and
Ray's temporary files and Ray's session logs land where the test reads every byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient

from tests.helpers import own_tuner_env
from tests.processes import Server, basic_auth_config, free_port, group_members, kill_group
from tuner.commands.cli import main
from tuner.tracking.tags import PARENT_ROLE, Status, Tag

pytestmark = pytest.mark.slow  # every test here talks to a real MLflow server it starts

ADMIN_PASSWORD = "admin-Pass-4d1f9c"  # basic_auth.ini's: MLflow ships no default
PASSWORDS = {"alice": "alice-Pass-8c2e7b", "bob": "bob-Pass-51a9e0", "carol": "carol-Pass-77d3a4"}
NAME = "team_digits"
# Two trials of one epoch on 300 digits: the search only has to write what a search writes.
SPEC = f"""\
name: {NAME}
data: {{dataset: digits, seed: 0, max_train: 300}}
search: {{algorithm: random, num_samples: 2, max_concurrent: 2, seed: 0}}
scheduler: {{type: fifo, max_epochs: 1}}
final: {{repeats: 1}}  # two trials, one test: no repeat runs beside them
resources: {{cpu: 1}}
space:
  model: {{name: simple_cnn, width: 16, depth: 2}}
  optimizer: {{name: adam, lr: {{loguniform: [1e-3, 1e-2]}}}}
  batch_size: 64
"""
SEARCH_S = 900  # Ray's start, torch's import, two short trials, the plots and the model
LOGIN = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
LOGIN_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@contextlib.contextmanager
def logged_in(user: str | None, password: str | None = None) -> Iterator[None]:
    """This process's MLflow client logs in as ``user`` (None: without a login)."""
    with pytest.MonkeyPatch.context() as patch:
        for variable in LOGIN_VARIABLES:
            patch.delenv(variable, raising=False)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        if user is not None:
            patch.setenv("MLFLOW_TRACKING_USERNAME", user)
            patch.setenv("MLFLOW_TRACKING_PASSWORD", password or PASSWORDS[user])
        yield


@dataclass(frozen=True)
class Team:
    """The server, and the experiment alice made on it (carol is denied it)."""

    server: Server
    experiment_id: str

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Iterator[Team]:
    """The auth app with default permission READ: every user reads what no one granted them,
    writes only where granted (a creator manages what they create)."""
    folder = tmp_path_factory.mktemp("auth_server")
    config = basic_auth_config(folder, ADMIN_PASSWORD, default_permission="READ")
    server = Server(folder, free_port(), auth=config)
    server.start()
    try:
        with logged_in("admin", ADMIN_PASSWORD):
            users = AuthServiceClient(server.url)
            for user, password in PASSWORDS.items():
                users.create_user(user, password)
        with logged_in("alice"):
            experiment_id = MlflowClient(server.url).create_experiment(NAME)
        with logged_in("admin", ADMIN_PASSWORD):
            users.grant_user_permission("carol", "experiment", experiment_id, "DENY")
        yield Team(server, experiment_id)
    finally:
        server.stop()


def tuner(folder: Path, *args: str, login: tuple[str, str] | None) -> subprocess.CompletedProcess:
    """`python -m tuner ARGS` in ``folder`` (and TMPDIR under it), logged in as ``login``."""
    env = {k: v for k, v in own_tuner_env().items() if k not in LOGIN_VARIABLES}
    env["TMPDIR"] = str(folder / "t")  # short: Ray's socket paths under it have a length limit
    (folder / "t").mkdir(exist_ok=True)
    if login is not None:
        env |= {"MLFLOW_TRACKING_USERNAME": login[0], "MLFLOW_TRACKING_PASSWORD": login[1]}
    process = subprocess.Popen(
        [sys.executable, "-m", "tuner", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its Ray joins its process group: ended with it below
    )
    try:
        stdout, stderr = process.communicate(timeout=SEARCH_S)
    finally:
        if process.poll() is None or group_members(process.pid):
            kill_group(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_args(folder: Path, team: Team) -> list[str]:
    spec = folder / f"{NAME}.yaml"
    spec.write_text(SPEC)
    return ["run", str(spec), "--tracking-uri", team.url, "--storage", str(folder / "ray")]


# ---------------------------------------------------------------------------------------------
# Let in: alice's search, and what reads it
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def search(team, tmp_path_factory) -> Path:
    """alice's search, as a process of its own; its folder holds all it wrote (output.txt:
    what it printed)."""
    folder = tmp_path_factory.mktemp("team")
    done = tuner(folder, *run_args(folder, team), login=("alice", PASSWORDS["alice"]))
    (folder / "output.txt").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def test_a_search_with_the_right_login_is_recorded(team, search):
    with logged_in("alice"):
        client = MlflowClient(team.url)
        runs = client.search_runs([team.experiment_id])
        (version,) = client.search_model_versions(f"name = '{NAME}'")
    roles = sorted(run.data.tags[Tag.ROLE] for run in runs)
    assert roles == ["parent", "trial", "trial"]
    parent = next(run for run in runs if run.data.tags.get(Tag.ROLE) == PARENT_ROLE)
    assert parent.data.tags[Tag.STATUS] == Status.COMPLETED
    assert version.run_id == parent.info.run_id  # the model registered too
    assert (search / "t" / "ray").is_dir()  # Ray started, under TMPDIR: its logs are read below


@pytest.mark.parametrize("user", ["alice", "bob"])  # bob reads by the default permission
def test_the_reading_commands_work_with_a_login(team, search, user, tmp_path, capsys):
    with logged_in(user):
        assert main(["best", NAME, "--json", "--tracking-uri", team.url]) == 0
        best = json.loads(capsys.readouterr().out)
        assert len(best["trials"]) == 2
        assert main(["report", NAME, "--out", str(tmp_path), "--tracking-uri", team.url]) == 0
        assert Path(capsys.readouterr().out.strip()) == tmp_path / f"{NAME}.html"
        assert main(["compare", NAME, NAME, "--tracking-uri", team.url]) == 0
        assert best["run_id"] in capsys.readouterr().out


def test_the_password_is_in_no_file_and_no_record(team, search):
    """Every byte of every file the search's process and the server wrote: the spec, Tune's
    folder, the temporary folder with Ray's session logs, what it printed; the server's
    database (tags, params), artifacts and log. And what MLflow's client reads back: the
    writes tuner's journal kept while the search ran (it goes once they are all written)."""
    password = PASSWORDS["alice"]
    files = [
        Path(root, name)
        for folder in (search, team.server.folder)
        for root, _, names in os.walk(folder)
        for name in names
    ]
    files = [path for path in files if path.is_file() and not path.is_symlink()]
    assert any(path.parent.name == NAME for path in files)  # Tune's folder of the search
    ray_logs = [path for path in files if "session_" in str(path) and "logs" in path.parts]
    assert ray_logs  # Ray's session, under TMPDIR
    assert [path for path in files if password.encode() in path.read_bytes()] == []
    with logged_in("alice"):
        client = MlflowClient(team.url)
        runs = client.search_runs([team.experiment_id])
        experiment = client.get_experiment(team.experiment_id)
    recorded = [experiment.tags] + [(run.data.tags, run.data.params) for run in runs]
    assert password not in json.dumps(recorded)


# ---------------------------------------------------------------------------------------------
# Kept out: one line, exit 2, before Ray starts
# ---------------------------------------------------------------------------------------------

REFUSED = {
    "no login": (None, f"wants a login: set {LOGIN} to your account on it (its admin makes one)"),
    "a wrong password": (
        ("alice", "not-alices-password"),
        f"did not accept user 'alice' and its password: check {LOGIN}",
    ),
    "a reader": (
        ("bob", PASSWORDS["bob"]),
        f"lets user 'bob' only READ on experiment '{NAME}', and a search writes to it: ask the "
        "server's admin for EDIT on it, or search under another name (run --name)",
    ),
    "no permission": (
        ("carol", PASSWORDS["carol"]),
        "denied user 'carol' /api/2.0/mlflow/experiments/get-by-name: ask its admin for READ on "
        "the experiment to read it, EDIT to write to it",
    ),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_search_kept_out_is_one_line_before_ray_starts(team, case, tmp_path):
    login, reason = REFUSED[case]
    done = tuner(tmp_path, *run_args(tmp_path, team), login=login)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"tuner: error: the MLflow server at {team.url} {reason}"
    ], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "t" / "ray").exists()  # Ray never started (its session folder)
    assert not (tmp_path / "ray").exists()  # nor Tune


@pytest.mark.parametrize(
    "command",
    [
        ["best", NAME],
        ["report", NAME],
        ["compare", NAME, NAME],
        ["predict", NAME, "digit.png"],
        ["ui", NAME],
        ["sync", NAME],
        ["resume", NAME],
    ],
    ids=lambda command: command[0],
)
@pytest.mark.parametrize("login", [None, ("alice", "not-alices-password")], ids=["none", "wrong"])
def test_a_reading_command_kept_out_is_one_line(team, command, login, capsys):
    with logged_in(*(login or (None,))):
        assert main([*command, "--tracking-uri", team.url]) == 2
    _, stderr = capsys.readouterr()
    reason = REFUSED["no login" if login is None else "a wrong password"][1]
    assert stderr.splitlines() == [f"tuner: error: the MLflow server at {team.url} {reason}"]


def test_the_line_masks_a_password_in_the_servers_uri(team, capsys):
    host = team.url.removeprefix("http://")
    with logged_in("alice", "not-alices-password"):
        assert main(["best", NAME, "--tracking-uri", f"http://alice:hunter2@{host}"]) == 2
    stderr = capsys.readouterr().err
    assert f"the MLflow server at http://alice:***@{host} did not accept" in stderr
    assert "hunter2" not in stderr
