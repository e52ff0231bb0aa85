-- SLA breaches seen by the sweep of unfinished executions: one row per (execution, sla), so a
-- breach is counted and announced once across sweeps and replicas.
CREATE TABLE sla_breaches (
    project     TEXT    NOT NULL,
    domain      TEXT    NOT NULL,
    execution   TEXT    NOT NULL,
    sla         TEXT    NOT NULL,          -- max_duration | deadline
    due_at      BIGINT  NOT NULL,          -- unix microseconds the execution had to finish by
    detected_at BIGINT  NOT NULL,
    PRIMARY KEY (project, domain, execution, sla)
);
-- The sweep reads unfinished executions across all projects, oldest first.
CREATE INDEX executions_unfinished ON executions (phase, created_at);
