"""The lanes of a store's transactions: each has threads and Postgres connections of its own, so
that no kind of work waits behind another (`dbosify._store.store.Store.transact`)."""

WORK = "work"  # claims, polls, workflow tasks, heartbeats: most transactions
FACT = "fact"  # activity results: never queued behind the others
BEAT = "beat"  # liveness beats (dbosify._worker.liveness): never late because others are busy
REAP = "reap"  # taking over dead workers' work
# Threads and Postgres connections per store and process, per lane (plus one for LISTEN).
LANES = {WORK: 6, FACT: 2, BEAT: 1, REAP: 1}
