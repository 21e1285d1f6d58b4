"""What a finished search concludes: its Pareto front and the repeats that re-train the top
configs with more seeds (the winner itself is ranked by ``tuner.core.selection``).

May import: ``tuner.core``, ``tuner.spec``, ``tuner.trainables``, ``tuner.tracking``.
"""
