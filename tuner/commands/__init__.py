"""The commands: the parser and each command's entry (``cli``), a search end to end (``run``:
it orchestrates the stages and nothing else), and `tuner repeat` (``repeat``).

May import every other package; none imports this one.
"""
