"""tuner's own lines on the terminal, and the live progress line they must not run into
(``tuner.search.progress``'s Tune callbacks draw it): one place for both, so a search's closing
steps and `tuner sync`'s (``tuner.publishing.closing``) are named alike."""

from __future__ import annotations

import shutil
import sys
import threading

# Whether a progress line is on the terminal without its newline: say() clears it first.
_drawn = False
# One writer at a time: the background MLflow writer (tuner.tracking.writer) notes from its own
# thread while the main one draws the progress line; re-entrant, as say() erases the line.
_lock = threading.RLock()


def say(text: str = "", *, end: str = "\n") -> None:
    """Print ``text`` of tuner's own on stdout (results, tables, steps), above the live
    progress line if one is drawn."""
    with _lock:
        erase_line()
        print(text, end=end, flush=True)


def note(text: str) -> None:
    """Print a note, warning or error of tuner's own on stderr, above the live progress line if
    one is drawn (it is on stdout: erased and flushed first, so the two streams don't mix on a
    terminal)."""
    with _lock:
        erase_line()
        sys.stdout.flush()
        print(text, file=sys.stderr, flush=True)


def step(what: str) -> None:
    """Name a step while it runs: each takes seconds and prints nothing of its own."""
    say(f"{what}…")


def erase_line() -> None:
    """Erase the live progress line, if one is drawn (before tuner prints, or stops)."""
    global _drawn
    with _lock:
        if _drawn:
            sys.stdout.write("\r\x1b[K")  # back to the line's start, and erase it
            _drawn = False


def drawn() -> bool:
    """Whether the live progress line is on the terminal."""
    return _drawn


def draw(text: str, *, final: bool) -> None:
    """Draw ``text`` as the live progress line, over the one drawn; ``final``: with its newline,
    so what follows starts below it."""
    global _drawn
    with _lock:
        sys.stdout.write(f"\r\x1b[K{text}" + ("\n" if final else ""))
        sys.stdout.flush()
        _drawn = not final


def width() -> int:
    """The columns a line may fill: the terminal's, less one (the last wraps on some)."""
    return shutil.get_terminal_size().columns - 1


def fit(text: str, columns: int) -> str:
    """``text`` cut to ``columns``, ending in an ellipsis where it was cut."""
    return text if len(text) <= columns else f"{text[: max(columns - 1, 0)]}…"


def short_value(text: str) -> str:
    """A parameter for a table: long floats (0.0021856...) shortened, anything else as is."""
    try:
        number = float(text)
    except ValueError:
        return text
    return text if number.is_integer() or len(text) <= 8 else f"{number:.4g}"
