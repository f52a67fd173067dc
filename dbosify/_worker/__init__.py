"""Temporal's worker-side core, in Python: what temporalio's workers poll instead of Core.

- `core`: a worker's core: claims runs, hands out activations, serves DBOS commands and queries;
- `activity_side`: its activity half: claims attempts, timeouts, cancels, results, local activities;
- `driver`: one run driver per claimed run: replay, then one transaction per workflow task;
- `commands`: one applier per workflow command kind, in the workflow task's transaction;
- `activations`: history events to activation jobs, and command helpers;
- `results`: activity results, group-committed;
- `replay_gate`: which claimed runs replay first;
- `queries`: query jobs for activations, and the answers recorded for clients;
- `replay`: temporalio's `Replayer` on any Temporal-shaped history;
- `liveness`: beats, reaping dead workers, and fencing of the ones presumed dead.
"""
