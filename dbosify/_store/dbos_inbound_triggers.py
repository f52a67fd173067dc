"""The triggers that bring DBOS's ``send`` and ``enqueue`` to Temporal runs (see `inbound`).

Apart from `inbound` so that setting DBOS up imports no engine module.
"""

from __future__ import annotations

from dbosify._store import dbos_ids as ids

APP = "dbosify"
START_VERSION = "dbosify:start"  # the application version of a start request not yet taken
# The application version of a DBOS enqueue's row once its run is started (`inbound`): PENDING
# until the workflow closes (the last run of its chain), then that run's status and outcome. The
# row's DBOS ID is the workflow ID: DBOS's verbs and messages given to it reach the workflow's
# running run.
ALIAS_VERSION = "dbosify:started"
ALIAS_DONE = "dbosify:closed"  # its executor ID once its workflow closed (a cancel is then done)
NULL_TOPIC = "__null__topic__"  # DBOS's topic when none is given
_REFUSE_CLOSED = "workflow execution already completed"
_REFUSE_TOPIC = "a message to a Temporal run is a signal: give its name as the topic"


def queue_name(namespace: str, task_queue: str) -> str:
    """The DBOS queue name that starts runs on ``task_queue`` of ``namespace``: both quoted as
    the parts of DBOS IDs (`ids.quote`), joined by ``/``."""
    return f"{ids.quote(namespace)}/{ids.quote(task_queue)}"


def wake_key(task_queue: str) -> str:
    """The key that wakes the workers of ``task_queue`` for DBOS's messages and starts."""
    return f"dbos-in:{task_queue}"


def pg_triggers(catalog: str, schema: str) -> list[str]:
    """Our triggers on DBOS's `notifications` and `workflow_status` in ``schema``."""
    unq = ids.sql_unquote
    find = f'SELECT ident INTO v_ident FROM "{catalog}".namespaces WHERE name = v_ns;'
    return [
        # A message to a run's DBOS ID, or to the ID of the enqueue that started its workflow
        # (the workflow ID: its running run takes it).
        f"""CREATE OR REPLACE FUNCTION "{schema}".dbosify_send() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE v_ns TEXT; v_ident TEXT; v_tq TEXT; v_status INT; v_queue TEXT;
        BEGIN
            IF current_setting('dbosify.writer', true) = 'on' THEN RETURN NEW; END IF;
            SELECT queue_name INTO v_queue FROM "{schema}".workflow_status
                WHERE workflow_uuid = NEW.destination_uuid AND application_version = '{ALIAS_VERSION}';
            IF v_queue IS NOT NULL THEN
                v_ns := {unq("split_part(v_queue, '/', 1)")};
                {find}
                IF v_ident IS NULL THEN RETURN NEW; END IF;
                EXECUTE format('SELECT task_queue FROM %I.executions WHERE workflow_id = $1'
                               ' AND status = 1', v_ident)
                    INTO v_tq USING NEW.destination_uuid;
                v_status := CASE WHEN v_tq IS NULL THEN 2 ELSE 1 END;
            ELSE
                IF array_length(string_to_array(NEW.destination_uuid, '/'), 1) <> 3 THEN
                    RETURN NEW;
                END IF;
                v_ns := {unq("split_part(NEW.destination_uuid, '/', 1)")};
                {find}
                IF v_ident IS NULL THEN RETURN NEW; END IF;
                EXECUTE format('SELECT task_queue, status FROM %I.executions WHERE run_id = $1'
                               ' AND workflow_id = $2', v_ident)
                    INTO v_tq, v_status
                    USING {unq("split_part(NEW.destination_uuid, '/', 3)")},
                          {unq("split_part(NEW.destination_uuid, '/', 2)")};
                IF v_tq IS NULL THEN RETURN NEW; END IF;
            END IF;
            IF v_status <> 1 THEN
                RAISE EXCEPTION 'dbosify: {_REFUSE_CLOSED} (%)', NEW.destination_uuid;
            END IF;
            IF NEW.topic IS NULL OR NEW.topic IN ('', '{NULL_TOPIC}') THEN
                RAISE EXCEPTION 'dbosify: {_REFUSE_TOPIC}';
            END IF;
            PERFORM pg_notify(v_ident, 'dbos-in:' || v_tq);
            RETURN NEW;
        END $$""",
        f'DROP TRIGGER IF EXISTS dbosify_send ON "{schema}".notifications',
        f"""CREATE TRIGGER dbosify_send BEFORE INSERT ON "{schema}".notifications FOR EACH ROW
        EXECUTE FUNCTION "{schema}".dbosify_send()""",
        f"""CREATE OR REPLACE FUNCTION "{schema}".dbosify_enqueue() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE v_ns TEXT; v_ident TEXT; v_tq TEXT; v_run TEXT;
        BEGIN
            IF current_setting('dbosify.writer', true) = 'on'
               OR array_length(string_to_array(NEW.queue_name, '/'), 1) <> 2 THEN
                RETURN NEW;
            END IF;
            v_ns := {unq("split_part(NEW.queue_name, '/', 1)")};
            v_tq := {unq("split_part(NEW.queue_name, '/', 2)")};
            {find}
            IF v_ident IS NULL THEN RETURN NEW; END IF;
            EXECUTE format('SELECT run_id FROM %I.executions WHERE workflow_id = $1 AND status = 1',
                           v_ident) INTO v_run USING NEW.workflow_uuid;
            IF v_run IS NOT NULL THEN
                RAISE EXCEPTION 'dbosify: Workflow execution is already running. WorkflowId: %, RunId: %.',
                    NEW.workflow_uuid, v_run;
            END IF;
            NEW.application_name := '{APP}';
            NEW.application_version := '{START_VERSION}';
            NEW.executor_id := NULL;
            PERFORM pg_notify(v_ident, 'dbos-in:' || v_tq);
            RETURN NEW;
        END $$""",
        f'DROP TRIGGER IF EXISTS dbosify_enqueue ON "{schema}".workflow_status',
        f"""CREATE TRIGGER dbosify_enqueue BEFORE INSERT ON "{schema}".workflow_status FOR EACH ROW
        WHEN (NEW.status = 'ENQUEUED' AND NEW.queue_name LIKE '%/%'
              AND NEW.application_name IS DISTINCT FROM '{APP}')
        EXECUTE FUNCTION "{schema}".dbosify_enqueue()""",
    ]


# SQLite: one namespace per file, so the run is looked up in the file's own `executions`. The
# last part of a DBOS ID (the run ID, which holds no `/`): what follows its last `/`.
_RUN_ID = "substr(NEW.destination_uuid, length(rtrim(NEW.destination_uuid," \
    " replace(NEW.destination_uuid, '/', ''))) + 1)"
_TQ = ids.sql_unquote("substr(NEW.queue_name, instr(NEW.queue_name, '/') + 1)")


def sqlite_triggers(namespace: str) -> list[str]:
    """The SQLite triggers of one namespace's file: an enqueue is taken only when its queue names
    this namespace (`queue_name`), so a DBOS application's own queue with a `/` is left alone."""
    ours = ids.quote(namespace).replace("'", "''") + "/"
    mine = f"substr(NEW.queue_name, 1, {len(ours)}) = '{ours}'"
    return [
        "DROP TRIGGER IF EXISTS dbosify_send",
        f"""CREATE TRIGGER dbosify_send BEFORE INSERT ON notifications
        WHEN EXISTS (SELECT 1 FROM executions WHERE run_id = {_RUN_ID})
        BEGIN
            SELECT RAISE(ABORT, 'dbosify: {_REFUSE_CLOSED}')
            WHERE (SELECT status FROM executions WHERE run_id = {_RUN_ID}) <> 1;
            SELECT RAISE(ABORT, 'dbosify: {_REFUSE_TOPIC}')
            WHERE NEW.topic IS NULL OR NEW.topic IN ('', '{NULL_TOPIC}');
            INSERT INTO notices (origin, key)
            SELECT 'dbos', 'dbos-in:' || task_queue FROM executions WHERE run_id = {_RUN_ID};
        END""",
        # A message to the ID of the enqueue that started a workflow: its running run takes it.
        "DROP TRIGGER IF EXISTS dbosify_send_alias",
        f"""CREATE TRIGGER dbosify_send_alias BEFORE INSERT ON notifications
        WHEN EXISTS (SELECT 1 FROM workflow_status WHERE workflow_uuid = NEW.destination_uuid
                     AND application_version = '{ALIAS_VERSION}'
                     AND substr(queue_name, 1, {len(ours)}) = '{ours}')
        BEGIN
            SELECT RAISE(ABORT, 'dbosify: {_REFUSE_CLOSED}')
            WHERE NOT EXISTS (SELECT 1 FROM executions WHERE workflow_id = NEW.destination_uuid AND status = 1);
            SELECT RAISE(ABORT, 'dbosify: {_REFUSE_TOPIC}')
            WHERE NEW.topic IS NULL OR NEW.topic IN ('', '{NULL_TOPIC}');
            INSERT INTO notices (origin, key)
            SELECT 'dbos', 'dbos-in:' || task_queue FROM executions
            WHERE workflow_id = NEW.destination_uuid AND status = 1;
        END""",
        "DROP TRIGGER IF EXISTS dbosify_enqueue_refuse",
        f"""CREATE TRIGGER dbosify_enqueue_refuse BEFORE INSERT ON workflow_status
        WHEN NEW.status = 'ENQUEUED' AND {mine}
             AND NEW.application_name IS NOT '{APP}'
             AND EXISTS (SELECT 1 FROM executions WHERE workflow_id = NEW.workflow_uuid AND status = 1)
        BEGIN SELECT RAISE(ABORT, 'dbosify: Workflow execution is already running.'); END""",
        "DROP TRIGGER IF EXISTS dbosify_enqueue",
        f"""CREATE TRIGGER dbosify_enqueue AFTER INSERT ON workflow_status
        WHEN NEW.status = 'ENQUEUED' AND {mine}
             AND NEW.application_name IS NOT '{APP}'
        BEGIN
            UPDATE workflow_status SET application_name = '{APP}', application_version = '{START_VERSION}',
                executor_id = NULL WHERE workflow_uuid = NEW.workflow_uuid;
            INSERT INTO notices (origin, key) VALUES ('dbos', 'dbos-in:' || {_TQ});
        END""",
    ]
