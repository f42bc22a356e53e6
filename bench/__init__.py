"""Benchmarks of the refresher beside a plain curl-and-sleep loop (`python -m bench`).

Reaction latency, idle cost, footprint over many refreshes and a herd of pods, all against the
in-repo stand-in API server on 127.0.0.1. The run prints tables and writes docs/benchmarks.md
with PNG plots in docs/img/.
"""
