"""Benchmarks: workloads measured against baselines taken in the same run on the same machine."""
