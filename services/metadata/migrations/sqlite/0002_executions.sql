-- Executions and what the event sink learns about them. Closures are flyteidl messages kept as
-- the API returns them; the columns next to them exist for filtering, sorting and concurrency.
CREATE TABLE executions (
    project         TEXT    NOT NULL,
    domain          TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    launch_plan     TEXT    NOT NULL,          -- name of the launch plan (or task, for single-task runs)
    workflow        TEXT    NOT NULL,          -- name of the workflow run
    phase           INTEGER NOT NULL,          -- flyteidl.core.WorkflowExecution.Phase
    mode            INTEGER NOT NULL,          -- flyteidl.admin.ExecutionMetadata.ExecutionMode
    spec            BLOB    NOT NULL,          -- ExecutionSpec, as sent (inputs merged into inputs_uri)
    closure         BLOB    NOT NULL,          -- ExecutionClosure
    inputs_uri      TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,          -- unix microseconds
    updated_at      BIGINT  NOT NULL,
    version         BIGINT  NOT NULL DEFAULT 0, -- optimistic concurrency for the event sink
    PRIMARY KEY (project, domain, name)
);
CREATE INDEX executions_recent ON executions (project, domain, created_at);
CREATE INDEX executions_by_phase ON executions (project, domain, phase, created_at);

CREATE TABLE node_executions (
    project         TEXT    NOT NULL,
    domain          TEXT    NOT NULL,
    execution       TEXT    NOT NULL,
    node_id         TEXT    NOT NULL,          -- unique node id within the execution
    parent_id       TEXT    NOT NULL,          -- unique id of the parent node, '' at top level
    phase           INTEGER NOT NULL,
    input_uri       TEXT    NOT NULL,
    closure         BLOB    NOT NULL,          -- NodeExecutionClosure
    metadata        BLOB    NOT NULL,          -- NodeExecutionMetaData
    occurred_at     BIGINT  NOT NULL,          -- of the newest applied event
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    version         BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (project, domain, execution, node_id)
);
CREATE INDEX node_executions_by_parent ON node_executions (project, domain, execution, parent_id, created_at);

CREATE TABLE task_executions (
    project         TEXT    NOT NULL,
    domain          TEXT    NOT NULL,
    execution       TEXT    NOT NULL,
    node_id         TEXT    NOT NULL,
    retry_attempt   INTEGER NOT NULL,
    task_id         BLOB    NOT NULL,          -- flyteidl.core.Identifier of the task
    phase           INTEGER NOT NULL,
    phase_version   INTEGER NOT NULL,
    input_uri       TEXT    NOT NULL,
    closure         BLOB    NOT NULL,          -- TaskExecutionClosure
    occurred_at     BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    version         BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (project, domain, execution, node_id, retry_attempt)
);
