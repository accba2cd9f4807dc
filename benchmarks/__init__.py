"""Benchmarks of nilva-session against the packages users would pick instead.

Run ``bash benchmarks/run`` (see docs/benchmarks.md).
"""
