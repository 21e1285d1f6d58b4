"""What a failed Tune trial says: the last line of its traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def error_line(trial: Any) -> str:
    """The last line of a failed Tune trial's traceback: the exception and its message."""
    if trial.error_file and Path(trial.error_file).exists():
        lines = Path(trial.error_file).read_text(errors="replace").strip().splitlines()
        if lines:
            return lines[-1]
    return "unknown error"
