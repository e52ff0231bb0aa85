-- The notifier's own records: one row per message (execution, phase, destination), every HTTP
-- attempt, and the per-channel pacing shared by all replicas. The same DDL serves Postgres and
-- SQLite (TEXT and BIGINT only). Times are unix microseconds. Statements are separated by `;`
-- at the end of a line (the runner splits there).
CREATE TABLE IF NOT EXISTS notifier_deliveries (
    id              TEXT    NOT NULL PRIMARY KEY,  -- random; attempts refer to it
    project         TEXT    NOT NULL,
    domain          TEXT    NOT NULL,
    execution       TEXT    NOT NULL,
    phase           TEXT    NOT NULL,              -- SUCCEEDED, FAILED, TIMED_OUT, ABORTED
    destination     TEXT    NOT NULL,              -- routed destination key: channel:#x, user:U1, recipient:...
    target          TEXT    NOT NULL,              -- webhook:#x or chat.postMessage:C1 after the hook; '' if none
    payload         TEXT    NOT NULL,              -- the Slack JSON body (text + blocks)
    state           TEXT    NOT NULL,              -- pending, delivered, failed, suppressed
    hook            TEXT    NOT NULL,              -- disabled, unchanged, applied, suppressed, function_error, timeout, throttled, error
    reasons         TEXT    NOT NULL,              -- why it was routed here
    event_id        TEXT    NOT NULL,              -- the bus envelope that caused it
    attempts        BIGINT  NOT NULL,              -- HTTP attempts so far
    failures        BIGINT  NOT NULL,              -- failed attempts that count towards giving up (not 429s)
    next_attempt_at BIGINT  NOT NULL,
    lease_owner     TEXT    NOT NULL,              -- replica sending it now
    lease_until     BIGINT  NOT NULL,              -- 0: nobody
    last_error      TEXT    NOT NULL,
    slack_ts        TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    UNIQUE (project, domain, execution, phase, destination)
);
CREATE INDEX IF NOT EXISTS notifier_deliveries_due ON notifier_deliveries (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS notifier_attempts (
    delivery_id     TEXT    NOT NULL,
    attempt         BIGINT  NOT NULL,              -- 1-based
    replica         TEXT    NOT NULL,
    started_at      BIGINT  NOT NULL,
    finished_at     BIGINT  NOT NULL,              -- 0 while in flight
    outcome         TEXT    NOT NULL,              -- in_flight, delivered, rate_limited, retry, failed, interrupted
    http_status     BIGINT  NOT NULL,              -- 0: no answer
    detail          TEXT    NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE TABLE IF NOT EXISTS notifier_channels (
    channel         TEXT    NOT NULL PRIMARY KEY,  -- #name, C..., U...
    next_send_at    BIGINT  NOT NULL               -- nobody posts here before this
);
