"""Benchmarks: measured on the real local stack, compared between runs (benchmarks/README.md)."""
