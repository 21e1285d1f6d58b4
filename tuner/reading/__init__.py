"""Reading searches back for people: the closing summary and `tuner best`, the HTML report and
`tuner compare`, and the MLflow UI's view of a search.

May import: ``tuner.core``, ``tuner.tracking``, ``tuner.conclusion``.
"""
