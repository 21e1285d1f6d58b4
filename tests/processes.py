"""Servers the tests start in their own session, stopped with their whole process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group (a server and its workers), SIGKILL it if it lingers."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


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
