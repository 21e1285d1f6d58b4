"""Recording a search in MLflow: the store and whether it answers (``store``), the layout of
parent and trial runs (``tags``) and reading it back (``records``), the parent run of one search
(``experiment``), and the background writer with its journal for a server that is down.

May import: ``tuner.core``. Knows nothing of Ray Tune.
"""
