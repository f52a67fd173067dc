"""The DBOS envelope: every Temporal run is also a DBOS workflow.

- `records`: each run's DBOS row, written in the transactions that change the run;
- `setup`: DBOS's system tables beside ours (created by DBOS's migrations, `migrate`) and our triggers;
- `commands`: DBOS's cancel and resume, carried out on runs by the workers.

No DBOS runtime runs in our processes (it would poll and commit while idle, and its recovery
would drive runs that our workers own); DBOS's tools manage the runs through the rows.
"""
