"""The vocabulary every stage shares: tuner's errors, secrets kept out of records, the terminal
writer, how a trial's value is read and ranked (``selection``), the code version, and the one
place that reaches into private parts of Ray Tune, Optuna and MLflow (``internals``).

Imports no other package of tuner.
"""
