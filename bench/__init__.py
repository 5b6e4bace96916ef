"""Benchmarks: each prints its figures; `make bench` runs bench_engine."""
