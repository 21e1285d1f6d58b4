"""Errors the CLI turns into one line on stderr and exit code 2, never a traceback."""


class UsageError(Exception):
    """Bad input from the user (spec, flags, data location); the message says how to fix it."""
