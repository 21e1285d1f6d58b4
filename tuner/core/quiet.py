"""What Ray, Optuna and MLflow say on the driver that a user need not read.

tuner's progress line and trial lines say what a user needs; ``--verbose`` shows the libraries'
own messages as well. Set before Ray starts: some of them come from its start.
"""

from __future__ import annotations

import logging

# Loggers on the driver whose messages say nothing to a user, and up to which level.
QUIET_LOGGERS = {
    "ray._private.authentication": logging.ERROR,  # the token-auth warning of a new cluster
    "ray.tune": logging.WARNING,  # "Wrote the latest version of all result files...", run times
    "ray.train": logging.WARNING,  # "Checkpoint successfully created at: ..."
    "mlflow.store.db.utils": logging.WARNING,  # "Creating initial MLflow database tables..."
    "alembic.runtime.migration": logging.WARNING,  # the store's schema, step by step
    # "Retrying (Retry(total=...)) after connection broken...": a line per HTTP retry of MLflow's
    # client while a tracking server is down; tuner's writer says once that it keeps the writes.
    "urllib3.connectionpool": logging.ERROR,
    # search.algorithm bohb: "sampling based optimization ... failed" with the KDEs' matrices,
    # each time BOHB falls back to a random config (its documented behaviour, nothing to do).
    "hpbandster": logging.ERROR,
}


def quiet_libraries(verbose: bool) -> None:
    """The libraries' own messages off, unless ``verbose``."""
    if verbose:
        return
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    # "A new study created in RDB with name: ...". Through Optuna's own switch: its logger sets
    # itself to INFO when Optuna first uses it, over a level set before that.
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Ray starts in a background thread (tuner.search.ray_start), which sets the SIGTERM handler
    # itself, and Ray warns that it could not: a warning about nothing the user did.
    logging.getLogger("ray._private.worker").addFilter(_not_about_sigterm)


def _not_about_sigterm(record: logging.LogRecord) -> bool:
    return "SIGTERM handler is not set" not in record.getMessage()
