"""Servers the tests start in their own session, stopped with their whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SERVER_START_S = 120  # `mlflow server` migrates its sqlite schema first: 5-60 s on a loaded box
# The basic-auth app signs its forms with it (CSRF): any value, the same across restarts.
AUTH_SECRET_KEY = "tuner-tests"


def stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group (a server and its workers), SIGKILL it if it lingers."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)


def kill_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGKILL a process started in its own session and its whole process group (the Ray a
    driver started: its processes join the driver's group), and wait until none is left."""
    with contextlib.suppress(ProcessLookupError):  # the whole group had ended already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    deadline = time.monotonic() + timeout
    while left := group_members(process.pid):
        assert time.monotonic() < deadline, f"processes {left} outlived SIGKILL"
        time.sleep(0.5)


def group_members(group: int) -> list[int]:
    """The processes of process group ``group`` that still run (zombies, which an init that
    does not reap may keep, don't), from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After "pid (command)": state, parent, process group, ...
            state, _, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
        except OSError:  # it ended meanwhile
            continue
        if state != "Z" and int(pgrp) == group:
            members.append(int(stat.parent.name))
    return members


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answers(process: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Wait for ``url`` to answer 200; fail with the server's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        tail = log.read_text(errors="replace")[-3000:]
        assert process.poll() is None, f"{url}: the server exited ({process.returncode}):\n{tail}"
        assert time.monotonic() < deadline, f"{url} never answered:\n{tail}"
        time.sleep(1)


def basic_auth_config(folder: Path, admin_password: str, default_permission: str) -> Path:
    """``folder/basic_auth.ini`` for `mlflow server --app-name basic-auth` (the keys of MLflow's
    own mlflow/server/auth/basic_auth.ini): users in ``folder/basic_auth.db``, the ``admin``
    user created with ``admin_password`` on the first start (MLflow ships none), and
    ``default_permission`` (READ, NO_PERMISSIONS, ...) on what no one granted a user."""
    config = folder / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        f"admin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return config


@dataclass
class Server:
    """`mlflow server` on a fixed port and folder, so it can be started again as it was; with
    ``auth`` (a ``basic_auth_config``), MLflow's basic-auth app, which wants a login."""

    folder: Path
    port: int
    auth: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--workers", "1"]
        command += ["--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}"]
        command += ["--artifacts-destination", str(self.folder / "artifacts")]
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        if self.auth is not None:
            command += ["--app-name", "basic-auth"]
            env |= {"MLFLOW_AUTH_CONFIG_PATH": str(self.auth)}
            env |= {"MLFLOW_FLASK_SERVER_SECRET_KEY": AUTH_SECRET_KEY}
        log = self.folder / "server.log"
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                command,
                cwd=self.folder,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        wait_until_answers(self.process, f"{self.url}/health", log, SERVER_START_S)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.running:
            stop_group(self.process)
