"""Benchmark: the same temporalio app on Temporal (dev server) and on dbosify (Postgres, SQLite).

Run ``python -m bench`` (or ``bench/run``) from the repository root; see bench/README.md.
"""
