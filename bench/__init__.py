"""Benchmarks: speed and memory, measured here and never asserted in the test suite."""
