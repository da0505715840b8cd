"""Benchmarks that run fedwarden side by side with Flower in one process, on the same inputs.

:mod:`fedwarden.bench.aggregators` times the robust aggregators against Flower 1.42's aggregation
functions and a ``mean(0)`` floor. Flower is an optional extra (``fedwarden[flower]``).
"""
