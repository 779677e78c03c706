"""Benchmarks and load/chaos runs; each prints its figures against a baseline from the same run."""
