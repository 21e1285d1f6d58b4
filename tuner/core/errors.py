"""Errors the CLI turns into one line on stderr and exit code 2, never a traceback."""

import difflib
from collections.abc import Sequence


class UsageError(Exception):
    """Bad input from the user (spec, flags, data location); the message says how to fix it."""


def unknown_key(key: str, allowed: Sequence[str]) -> str:
    """``unknown key (did you mean `c`?); allowed: ...`` — the one wording every validator uses."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    return f"unknown key{hint}; allowed: {', '.join(allowed)}"
