"""Versioned schema migrations of a namespace's tables.

Each namespace's tables carry a schema version (Postgres: its row in the catalog, see
`namespaces`; SQLite: the file's ``PRAGMA user_version``). A process that finds the version
current runs no DDL at all. An older version is brought forward once, in order, in one
transaction that holds the catalog's lock (Postgres ``pg_advisory_xact_lock``; SQLite
``BEGIN IMMEDIATE``); a newer one is refused with both versions named.

Migrations are append-only: a released one is never edited, a change is a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dbosify._store.errors import StoreError

Execute = Callable[[str], Any]  # runs one statement on the open transaction, returns a cursor

# Version 1: the schema as first released (before versioning, created with IF NOT EXISTS at every
# start). Kept idempotent so that a database of that release upgrades in place.
_V1 = """
CREATE TABLE IF NOT EXISTS executions (
    run_id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    task_queue TEXT NOT NULL,
    status INTEGER NOT NULL,
    first_execution_run_id TEXT NOT NULL,
    start_time DOUBLE PRECISION NOT NULL,
    close_time DOUBLE PRECISION,
    next_event_id INTEGER NOT NULL,
    owner TEXT,
    parent_namespace TEXT,
    parent_workflow_id TEXT,
    parent_run_id TEXT,
    parent_seq INTEGER,
    request_id TEXT,
    wft_failure BYTEA,
    wft_attempt INTEGER NOT NULL DEFAULT 0,
    execution_deadline DOUBLE PRECISION,
    run_deadline DOUBLE PRECISION,
    not_before DOUBLE PRECISION
);
CREATE UNIQUE INDEX IF NOT EXISTS executions_one_running
    ON executions (workflow_id) WHERE status = 1;
CREATE INDEX IF NOT EXISTS executions_by_workflow ON executions (workflow_id, start_time);
CREATE INDEX IF NOT EXISTS executions_claim ON executions (task_queue, status, owner);
CREATE TABLE IF NOT EXISTS history (
    run_id TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    event_type INTEGER NOT NULL,
    seq INTEGER,
    dedup TEXT,
    event BYTEA NOT NULL,
    PRIMARY KEY (run_id, event_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS history_dedup ON history (run_id, dedup);
CREATE TABLE IF NOT EXISTS activity_tasks (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    task_queue TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    available_at DOUBLE PRECISION NOT NULL,
    owner TEXT,
    started_at DOUBLE PRECISION,
    heartbeat_at DOUBLE PRECISION,
    details BYTEA,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    scheduled_event_id INTEGER NOT NULL,
    scheduled_time DOUBLE PRECISION NOT NULL,
    last_failure BYTEA,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS activity_tasks_claim ON activity_tasks (task_queue, state, available_at);
CREATE TABLE IF NOT EXISTS updates (
    run_id TEXT NOT NULL,
    update_id TEXT NOT NULL,
    state TEXT NOT NULL,
    request BYTEA NOT NULL,
    outcome BYTEA,
    PRIMARY KEY (run_id, update_id)
);
CREATE TABLE IF NOT EXISTS queries (
    query_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    state TEXT NOT NULL,
    request BYTEA NOT NULL,
    response BYTEA
);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    task_queue TEXT NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);
"""

# SQLite has no cross-process notifications: each transaction that wakes keys also appends them
# here, and one thread per process watches `PRAGMA data_version` and reads the new rows.
_V1_SQLITE_NOTICES = """
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    key TEXT NOT NULL
)
"""


def _v1(execute: Execute, is_sqlite: bool) -> None:
    for stmt in _V1.split(";"):
        if stmt.strip():
            execute(stmt.replace("BYTEA", "BLOB") if is_sqlite else stmt)
    if is_sqlite:
        execute(_V1_SQLITE_NOTICES)
        have = {r[1] for r in execute("PRAGMA table_info(executions)").fetchall()}
        if "not_before" not in have:  # added late in that release
            execute("ALTER TABLE executions ADD COLUMN not_before DOUBLE PRECISION")
    else:
        execute("ALTER TABLE executions ADD COLUMN IF NOT EXISTS not_before DOUBLE PRECISION")


def _v2(execute: Execute, is_sqlite: bool) -> None:
    # Fencing: every claim of a run increments its generation; a driver's writes check it.
    execute("ALTER TABLE executions ADD COLUMN claim_gen INTEGER NOT NULL DEFAULT 0")


# The dev server's pre-registered custom search attributes (`temporal server start-dev`), so that
# code written against it finds them here too. Types are temporalio's IndexedValueType numbers.
DEV_SERVER_SEARCH_ATTRIBUTES: tuple[tuple[str, int], ...] = (
    ("CustomTextField", 1),
    ("CustomStringField", 1),
    ("CustomKeywordField", 2),
    ("CustomIntField", 3),
    ("CustomDoubleField", 4),
    ("CustomBoolField", 5),
    ("CustomDatetimeField", 6),
)


def _v3(execute: Execute, is_sqlite: bool) -> None:
    # Visibility: what list filters and describe() read besides the history.
    blob = "BLOB" if is_sqlite else "BYTEA"
    for column in (
        "execution_time DOUBLE PRECISION",
        "root_workflow_id TEXT",
        "root_run_id TEXT",
        "history_size_bytes BIGINT NOT NULL DEFAULT 0",
        f"memo {blob}",
        f"search_attributes {blob}",
    ):
        execute(f"ALTER TABLE executions ADD COLUMN {column}")
    execute(
        "UPDATE executions SET execution_time = start_time + COALESCE(not_before - start_time, 0),"
        " root_workflow_id = workflow_id, root_run_id = run_id"
    )
    # One row per indexed value (a KeywordList's elements, a Text's word tokens each have one).
    execute(
        "CREATE TABLE search_attributes (run_id TEXT NOT NULL, name TEXT NOT NULL,"
        " v_text TEXT, v_int BIGINT, v_num DOUBLE PRECISION)"
    )
    execute("CREATE INDEX search_attributes_by_run ON search_attributes (run_id, name)")
    execute("CREATE INDEX search_attributes_text ON search_attributes (name, v_text)")
    execute("CREATE INDEX search_attributes_int ON search_attributes (name, v_int)")
    execute("CREATE INDEX search_attributes_num ON search_attributes (name, v_num)")
    # The namespace's custom search attributes and their types (the operator service's registry).
    execute("CREATE TABLE search_attribute_types (name TEXT PRIMARY KEY, value_type INTEGER NOT NULL)")
    for name, value_type in DEV_SERVER_SEARCH_ATTRIBUTES:
        execute(f"INSERT INTO search_attribute_types (name, value_type) VALUES ('{name}', {value_type})")
    # Listing walks newest first; filters on the common system attributes use an index.
    execute("CREATE INDEX executions_by_start ON executions (start_time, run_id)")
    execute("CREATE INDEX executions_by_close ON executions (close_time)")
    execute("CREATE INDEX executions_by_type ON executions (workflow_type, start_time)")
    execute("CREATE INDEX executions_by_status ON executions (status, start_time)")
    if not is_sqlite:  # STARTS_WITH is a LIKE prefix match there: it needs pattern-ordered keys
        execute("CREATE INDEX executions_by_workflow_prefix ON executions (workflow_id text_pattern_ops)")
        execute("CREATE INDEX search_attributes_text_prefix ON search_attributes (name, v_text text_pattern_ops)")


def _v4(execute: Execute, is_sqlite: bool) -> None:
    # Schedules: each row is one schedule, fired by whichever process takes its row lock first.
    blob = "BLOB" if is_sqlite else "BYTEA"
    execute(
        "CREATE TABLE schedules (schedule_id TEXT PRIMARY KEY,"
        f" schedule {blob} NOT NULL, memo {blob}, search_attributes {blob},"
        " state TEXT NOT NULL,"  # the scheduler's own state (JSON): counters, buffer, recent actions
        " conflict_token BIGINT NOT NULL,"
        " processed_until DOUBLE PRECISION NOT NULL,"  # nominal times up to here are handled
        " next_due DOUBLE PRECISION)"  # when the schedule next needs attention (NULL: not by time)
    )
    execute("CREATE INDEX schedules_due ON schedules (next_due)")
    execute("ALTER TABLE executions ADD COLUMN schedule_id TEXT")
    execute("ALTER TABLE executions ADD COLUMN cron_schedule TEXT")  # start option cron_schedule
    execute("CREATE INDEX executions_by_schedule ON executions (schedule_id, status)")


def _v5(execute: Execute, is_sqlite: bool) -> None:
    # Activity pause and reset (PauseActivity, UnpauseActivity, ResetActivity): a paused task is
    # never claimed; a running attempt learns of a pause or reset at its next heartbeat.
    blob = "BLOB" if is_sqlite else "BYTEA"
    for column in (
        "paused INTEGER NOT NULL DEFAULT 0",
        f"pause_info {blob}",  # workflow.v1.PendingActivityInfo.PauseInfo
        "pause_request_id TEXT",
        "reset_requested INTEGER NOT NULL DEFAULT 0",  # the running attempt is told at its heartbeat
        "reset_heartbeats INTEGER NOT NULL DEFAULT 0",  # the next attempt starts without details
        "attempts_reset INTEGER NOT NULL DEFAULT 0",  # the running attempt's retry counts from 1
    ):
        execute(f"ALTER TABLE activity_tasks ADD COLUMN {column}")
    # Workflow reset: the request that created a reset run (a repeated request returns it), and
    # on the base run, the run its reset created.
    execute("ALTER TABLE executions ADD COLUMN reset_request_id TEXT")
    execute("ALTER TABLE executions ADD COLUMN reset_run_id TEXT")


def _v6(execute: Execute, is_sqlite: bool) -> None:
    # Standalone activities (started by a client, not a workflow): one row per run of an activity
    # id. Its attempts are rows of activity_tasks (seq 0), so workers claim them with the same
    # query as workflows' activities, and the reaper hands a dead worker's attempts out again.
    blob = "BLOB" if is_sqlite else "BYTEA"
    execute(
        "CREATE TABLE activity_executions (run_id TEXT PRIMARY KEY, activity_id TEXT NOT NULL,"
        " activity_type TEXT NOT NULL, task_queue TEXT NOT NULL,"
        " status INTEGER NOT NULL,"  # temporalio's ActivityExecutionStatus
        " request_id TEXT, start_time DOUBLE PRECISION NOT NULL,"
        " execution_time DOUBLE PRECISION NOT NULL,"  # start time + start delay
        " close_time DOUBLE PRECISION,"
        f" request {blob} NOT NULL,"  # the normalised StartActivityExecutionRequest
        f" outcome {blob}, search_attributes {blob},"
        " attempt INTEGER NOT NULL DEFAULT 1,"  # the last attempt, once closed
        " last_started DOUBLE PRECISION, last_completed DOUBLE PRECISION, last_identity TEXT,"
        f" last_failure {blob}, last_details {blob}, last_heartbeat DOUBLE PRECISION,"
        " cancel_reason TEXT, cancel_request_id TEXT, terminate_request_id TEXT,"
        " transitions INTEGER NOT NULL DEFAULT 1, heartbeats INTEGER NOT NULL DEFAULT 0,"
        " check_at DOUBLE PRECISION)"  # when a timeout may fall due: the sweep looks then
    )
    execute(
        "CREATE UNIQUE INDEX activity_executions_one_running ON activity_executions (activity_id)"
        " WHERE status = 1"
    )
    execute("CREATE INDEX activity_executions_by_id ON activity_executions (activity_id, start_time)")
    execute("CREATE INDEX activity_executions_by_start ON activity_executions (start_time, run_id)")
    execute("CREATE INDEX activity_executions_check ON activity_executions (check_at)")


def _v7(execute: Execute, is_sqlite: bool) -> None:
    # Dormant runs: evicted from every worker's cache, unowned, and claimed again only when they
    # have work (an event, update or query clears `dormant`) or when `wake_at` (their earliest
    # due timer or timeout) has passed. The driver of an owned run keeps `wake_at` too, so that
    # a dead worker's idle runs go dormant instead of being replayed by the survivors.
    execute("ALTER TABLE executions ADD COLUMN dormant INTEGER NOT NULL DEFAULT 0")
    execute("ALTER TABLE executions ADD COLUMN wake_at DOUBLE PRECISION")
    # What a claim looks at: ready runs, and dormant runs by due time (one index lookup each,
    # however many runs sleep).
    execute(
        "CREATE INDEX executions_ready ON executions (task_queue, start_time)"
        " WHERE status = 1 AND owner IS NULL AND dormant = 0"
    )
    execute(
        "CREATE INDEX executions_wake ON executions (task_queue, wake_at)"
        " WHERE status = 1 AND owner IS NULL AND dormant = 1"
    )
    # A dead worker's runs are checked for pending queries.
    execute("CREATE INDEX queries_by_run ON queries (run_id, state)")


def _v8(execute: Execute, is_sqlite: bool) -> None:
    # A worker's runs (at most its cache), released when it dies or shuts down: found through
    # this small index instead of by reading every open run (`executions_claim` leads with the
    # task queue, which those statements do not name).
    execute("CREATE INDEX executions_owned ON executions (owner) WHERE owner IS NOT NULL")


def _v9(execute: Execute, is_sqlite: bool) -> None:
    # Nexus operations' tasks (dbosify/_engine/nexus_tasks.py): a start or cancel request waiting for, or
    # held by, a worker of the endpoint's task queue; retried with backoff, fenced by attempt.
    execute(
        "CREATE TABLE nexus_tasks ("
        " task_id TEXT PRIMARY KEY,"
        " run_id TEXT NOT NULL,"
        " seq INTEGER NOT NULL,"
        " scheduled_event_id INTEGER NOT NULL,"
        " kind TEXT NOT NULL,"
        " task_queue TEXT NOT NULL,"
        " endpoint TEXT NOT NULL,"
        " request BYTEA NOT NULL,"
        " state TEXT NOT NULL,"
        " attempt INTEGER NOT NULL,"
        " owner TEXT,"
        " available_at DOUBLE PRECISION NOT NULL,"
        " deadline DOUBLE PRECISION,"
        " cancel_requested INTEGER NOT NULL DEFAULT 0,"
        " last_failure BYTEA)"
    )
    execute(
        "CREATE INDEX nexus_tasks_ready ON nexus_tasks (task_queue, available_at) WHERE state = 'scheduled'"
    )
    execute("CREATE INDEX nexus_tasks_owned ON nexus_tasks (owner) WHERE owner IS NOT NULL")
    execute("CREATE INDEX nexus_tasks_by_run ON nexus_tasks (run_id, seq)")


def _v10(execute: Execute, is_sqlite: bool) -> None:
    # Who polls a task queue (DescribeTaskQueue, `dbosify/_engine/task_queues.py`): each worker's
    # liveness row says who it is, which task types it polls (bits: 1 workflow, 2 activity,
    # 4 Nexus) and its build id. A worker that leaves or is reaped is kept in `pollers` for five
    # minutes after its last beat, as a Temporal server lists a poller after its last poll.
    execute("ALTER TABLE workers ADD COLUMN identity TEXT NOT NULL DEFAULT ''")
    execute("ALTER TABLE workers ADD COLUMN task_types INTEGER NOT NULL DEFAULT 0")
    execute("ALTER TABLE workers ADD COLUMN build_id TEXT NOT NULL DEFAULT ''")
    execute(
        "CREATE TABLE pollers (worker_id TEXT PRIMARY KEY, task_queue TEXT NOT NULL,"
        " identity TEXT NOT NULL, task_types INTEGER NOT NULL, build_id TEXT NOT NULL,"
        " last_access DOUBLE PRECISION NOT NULL)"
    )
    execute("CREATE INDEX pollers_by_queue ON pollers (task_queue, last_access)")
    execute("CREATE INDEX pollers_by_access ON pollers (last_access)")


def _v11(execute: Execute, is_sqlite: bool) -> None:
    # Task queue priority and fairness (dbosify/_engine/priorities.py). A run keeps its priority
    # as given, merged with its parent's (``priority_key`` 0, ``fairness_key`` '' and
    # ``fairness_weight`` 0 mean unset: its children and activities inherit field by field), and
    # ``task_priority``, the key its workflow tasks are claimed by (1 first; 3 when unset).
    for column in ("priority_key INTEGER NOT NULL DEFAULT 0", "fairness_key TEXT NOT NULL DEFAULT ''",
                   "fairness_weight DOUBLE PRECISION NOT NULL DEFAULT 0",
                   "task_priority INTEGER NOT NULL DEFAULT 3"):
        execute(f"ALTER TABLE executions ADD COLUMN {column}")
    execute("DROP INDEX executions_ready")
    execute(
        "CREATE INDEX executions_ready ON executions (task_queue, task_priority, start_time)"
        " WHERE status = 1 AND owner IS NULL AND dormant = 0"
    )
    # An activity task's effective priority key, fairness key and weight, and its pass: the
    # virtual time at which its fairness key is served (stride scheduling), given when the
    # task is first ready (NULL until then, and again when it waits for a retry).
    for column in ("task_priority INTEGER NOT NULL DEFAULT 3", "fairness_key TEXT NOT NULL DEFAULT ''",
                   "fairness_weight DOUBLE PRECISION NOT NULL DEFAULT 1", "fair_pass DOUBLE PRECISION"):
        execute(f"ALTER TABLE activity_tasks ADD COLUMN {column}")
    # A claim takes the first of this index (priority, then pass): one lookup whatever the backlog.
    execute(
        "CREATE INDEX activity_tasks_fair ON activity_tasks (task_queue, task_priority, fair_pass)"
        " WHERE state = 'scheduled' AND paused = 0 AND fair_pass IS NOT NULL"
    )
    # The last pass of each fairness key, and the tasks that became ready without one.
    execute(
        "CREATE INDEX activity_tasks_fair_key ON activity_tasks"
        " (task_queue, task_priority, fairness_key, fair_pass)"
        " WHERE state = 'scheduled' AND fair_pass IS NOT NULL"
    )
    execute(
        "CREATE INDEX activity_tasks_unpassed ON activity_tasks (task_queue, task_priority, available_at)"
        " WHERE state = 'scheduled' AND fair_pass IS NULL"
    )
    # A task queue's activity rate (the Worker option max_task_queue_activities_per_second): a
    # token bucket shared by every worker of the queue, set by the last worker given the option
    # that claimed (``set_by``), and honoured while that worker is alive.
    execute(
        "CREATE TABLE task_queue_rates (task_queue TEXT PRIMARY KEY, rate DOUBLE PRECISION NOT NULL,"
        " set_by TEXT NOT NULL, tokens DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL)"
    )


def _v12(execute: Execute, is_sqlite: bool) -> None:
    # Worker deployments (dbosify/_engine/deployments.py). A deployment's routing: its current
    # and ramping build ids (NULL: none), the ramp's percentage, and a revision (the conflict
    # token). A version is created when a worker of it first polls, once per task queue.
    execute(
        "CREATE TABLE worker_deployments (name TEXT PRIMARY KEY, create_time DOUBLE PRECISION NOT NULL,"
        " current_build TEXT, current_since DOUBLE PRECISION, ramping_build TEXT,"
        " ramping_pct DOUBLE PRECISION NOT NULL DEFAULT 0, ramping_since DOUBLE PRECISION,"
        " routing_time DOUBLE PRECISION, revision INTEGER NOT NULL DEFAULT 0,"
        " last_modifier TEXT NOT NULL DEFAULT '')"
    )
    execute(
        "CREATE TABLE deployment_versions (deployment_name TEXT NOT NULL, build_id TEXT NOT NULL,"
        " task_queue TEXT NOT NULL, create_time DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (deployment_name, build_id, task_queue))"
    )
    execute("CREATE INDEX deployment_versions_by_queue ON deployment_versions (task_queue)")
    # A run's versioning: the version it is pinned to (canonical "deployment.build", NULL when
    # it goes where its deployment routes new tasks), the behavior and version of its last
    # workflow task, its override (a VersioningOverride), and its ramp bucket in [0, 100).
    for column in ("vers_pinned TEXT", "vers_behavior INTEGER NOT NULL DEFAULT 0", "vers_deployment TEXT",
                   "vers_build TEXT", "vers_override BYTEA", "vers_bucket DOUBLE PRECISION NOT NULL DEFAULT 0"):
        execute(f"ALTER TABLE executions ADD COLUMN {column}")


@dataclass(frozen=True)
class Migration:
    version: int
    summary: str
    apply: Callable[[Execute, bool], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the first released schema", _v1),
    Migration(2, "claim generations, so that a stale owner's writes are refused", _v2),
    Migration(3, "visibility: search attributes, memo, and the system attributes filters use", _v3),
    Migration(4, "schedules; the schedule or cron string that started a run", _v4),
    Migration(5, "activity pause and reset; workflow reset's request id and new run", _v5),
    Migration(6, "standalone activities (started by a client, not by a workflow)", _v6),
    Migration(7, "dormant runs (evicted, claimed again when they have work) and their wake-up time", _v7),
    Migration(8, "an index of the runs each worker owns, for releasing them", _v8),
    Migration(9, "Nexus operations' tasks", _v9),
    Migration(10, "who polls a task queue: workers' identity and task types, recent pollers", _v10),
    Migration(11, "task queue priority, fairness and activity rate limits", _v11),
    Migration(12, "worker deployments, their versions and routing; each run's versioning", _v12),
)
CURRENT_VERSION = MIGRATIONS[-1].version


def check_not_newer(version: int, where: str) -> None:
    """Refuse a database written by a newer dbosify, naming both versions."""
    if version > CURRENT_VERSION:
        raise StoreError(
            f"{where} has schema version {version}, but this dbosify knows versions up to"
            f" {CURRENT_VERSION}: it was written by a newer dbosify; upgrade dbosify to use it"
        )


def upgrade(execute: Execute, is_sqlite: bool, from_version: int) -> int:
    """Apply every migration newer than ``from_version`` on the open transaction."""
    for m in MIGRATIONS:
        if m.version > from_version:
            m.apply(execute, is_sqlite)
    return CURRENT_VERSION
