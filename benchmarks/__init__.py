"""Benchmarks: timings and learning runs that are too long for the test suite."""
