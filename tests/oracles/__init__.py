"""Oracles: the released computations written plainly, loop by loop.

- :mod:`tests.oracles.activitynet_toolkit`: the ActivityNet toolkit's detection AP;
- :mod:`tests.oracles.released_loops`: SCL, the exemplar bank and the exemplar draw, the
  way the released code runs them.

Tests compare the product with them. The benchmarks time the product against them, and
this package is the only thing outside the product that a benchmark imports: one copy,
which the tests check against the product, so a benchmark compares like for like (a copy
kept in ``benchmarks/`` would be checked by nothing). Nothing here imports a test module.
"""
