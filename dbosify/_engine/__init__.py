"""The engine: the transactions on a namespace's tables and the rules they carry.

Below `_server` (what a Temporal frontend answers) and `_worker` (what Core does in a worker),
above `_dbos` (the DBOS records written in the same transactions) and `_store` (connections,
backends, wake-ups). Nothing here imports `_server`, `_worker` or `_native`.
"""

from dbosify._engine import runs, scheduler

# A run a schedule started tells its schedule when it closes (the scheduler starts runs itself).
runs.on_schedule_run_closed = scheduler.on_run_closed
