"""The ground floor: numpy-only helpers that every other part of routecraft may import and that import nothing of
routecraft themselves.

* :mod:`routecraft.core.metrics`: the field's metrics on accuracy-vs-cost curves (RouterBench, RouteLLM, R2-Router).
* :mod:`routecraft.core.sweep`: the λ trade-off rule on score/cost arrays, the λ grid, and the realised
  (cost, score) of a sweep replayed on logged outcomes.
"""
