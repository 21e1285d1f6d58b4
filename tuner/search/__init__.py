"""Running the search on Ray Tune: Ray's start, what trials are given (``inputs``), the searchers
and the scheduler, the Tune callbacks that record trials and draw progress, Tune's saved state
kept whole for a resume, and warm starts from earlier searches.

May import: ``tuner.core``, ``tuner.spec``, ``tuner.trainables``, ``tuner.tracking``.
"""
