"""The code a search ran: the git commit, for MLflow's source tag."""

from __future__ import annotations

from pathlib import Path


def code_version() -> str:
    """The git commit of the checkout tuner runs from, "" when it isn't one (an installed
    package), with ``+changes`` when files differ from it."""
    import subprocess

    here = Path(__file__).parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        changes = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        )
    except OSError:  # no git on this machine
        return ""
    if commit.returncode:
        return ""
    return commit.stdout.strip() + ("+changes" if changes.stdout.strip() else "")
