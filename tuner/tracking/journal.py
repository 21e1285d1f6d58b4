"""The journal: a search's MLflow writes that the store has not taken yet, in a file beside Tune's
state, so a tracking server that is down (for the rest of the search, or while the driver is
killed) loses nothing.

The background writer (``tuner.tracking.writer.Writer``) appends each write here before it sends it
and marks how far the store has taken them; whatever lies past the mark when a driver stops is
what ``tuner sync`` and ``tuner resume`` write later. A write sent twice changes nothing in the
store (``tracking.Write`` says why), so a mark that lags behind the store costs only time.

One JSON object a line: ``{"seq": n, "write": {...}}`` for a write, ``{"written": n}`` for the
mark (every write up to ``seq`` n is in the store). The file is removed once all are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class Journal:
    """One search's journal file; ``unwritten`` holds the writes past the mark when it opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.unwritten: list[dict[str, Any]] = []
        self.seq = 0  # the latest write's number
        written = 0
        lines = path.read_text().splitlines() if path.is_file() else []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the last line, cut short by a killed driver
                continue
            if "written" in entry:
                written = max(written, entry["written"])
            else:
                self.seq = max(self.seq, entry["seq"])
                self.unwritten.append(entry)
        self.unwritten = [entry["write"] for entry in self.unwritten if entry["seq"] > written]

    def finishes(self, run_id: str) -> bool:
        """Whether a write it kept ends run ``run_id`` as FINISHED (a search that finished while
        its server was down)."""
        return any(w["run"] == run_id and w["status"] == "FINISHED" for w in self.unwritten)

    def append(self, write: dict[str, Any]) -> int:
        """Keep a write (before it is sent); its number, for ``written``."""
        self.seq += 1
        self._add({"seq": self.seq, "write": write})
        return self.seq

    def written(self, seq: int) -> None:
        """The store holds every write up to number ``seq``; when that is the latest, the file
        goes."""
        if seq == self.seq:
            self.path.unlink(missing_ok=True)
        else:
            self._add({"written": seq})

    def _add(self, entry: dict[str, Any]) -> None:
        # Appended and closed at once: a driver killed later loses nothing written here (a
        # machine that loses power may, which fsync per epoch would not be worth).
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as file:
            file.write(json.dumps(entry) + "\n")
