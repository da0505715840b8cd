"""Benchmarks; their results, and how each run was made, are under benchmarks/.

* :mod:`fedwarden.bench.aggregators` times the robust aggregators against Flower 1.42's
  aggregation functions and a ``mean(0)`` floor, on the same matrices;
* :mod:`fedwarden.bench.runtime` times the overhead of a round (everything but training),
  fedwarden's and Flower's, each as separate processes on 127.0.0.1;
* :mod:`fedwarden.bench.defences` is the defence matrix: every defence against every attack in
  simulated trainings, and free-rider detection;
* :mod:`fedwarden.bench.operator_scale` runs the operator on the test control plane with many
  trainings and clients (``python -m fedwarden.bench.operator_scale``).

Flower is an optional extra (``fedwarden[flower]``).
"""
