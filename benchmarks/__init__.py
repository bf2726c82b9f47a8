"""Benchmarks: programs that measure Visual Runtime against same-run baselines.

Run them all with ``python -m benchmarks`` (see ``benchmarks/__main__.py``).
"""
