"""What a search leaves for people: plots and tables on the parent run, the anytime curve, the
best model exported and registered, and the closing step that logs them (kept for `tuner sync`
when the server is down).

May import: ``tuner.core``, ``tuner.spec``, ``tuner.trainables``, ``tuner.tracking``,
``tuner.conclusion``, and ``tuner.search``'s translation of a space into Optuna's distributions
(the plots' study is drawn from what the searcher sampled).
"""
