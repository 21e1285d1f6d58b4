"""The vocabulary every stage shares: tuner's errors, secrets kept out of records, the terminal
writer, what a search optimizes (``objective``: the one reading of a mode), how a trial's value
is read and ranked (``selection``), the code version, and the one place that reaches into
private parts of Ray Tune, Optuna and MLflow (``internals``).

Imports no other package of tuner.
"""
