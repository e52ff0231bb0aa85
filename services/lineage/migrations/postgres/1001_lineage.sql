-- The lineage graph. Nodes and edges are keyed by the stable node keys the service computes, so a
-- redelivered event inserts nothing new. `origin` says who wrote a row: 'event' (never removed) or
-- 'decl:<project>' (replaced as a whole when the project applies a new lineage.yaml).
CREATE TABLE lineage_nodes (
    node_key    TEXT    NOT NULL PRIMARY KEY,
    kind        TEXT    NOT NULL,
    project     TEXT    NOT NULL,
    label       TEXT    NOT NULL,
    lookup      TEXT    NOT NULL,           -- runs: <project>/<workflow>; model versions: the model key
    origin      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL            -- unix microseconds
);
CREATE INDEX lineage_nodes_lookup ON lineage_nodes (kind, lookup, created_at);
CREATE INDEX lineage_nodes_origin ON lineage_nodes (origin);

CREATE TABLE lineage_attrs (
    node_key    TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    PRIMARY KEY (node_key, name)
);

CREATE TABLE lineage_edges (
    from_key    TEXT    NOT NULL,
    to_key      TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    origin      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (from_key, to_key, kind)     -- downstream walks use this prefix
);
CREATE INDEX lineage_edges_to ON lineage_edges (to_key, from_key);   -- upstream walks
CREATE INDEX lineage_edges_origin ON lineage_edges (origin);

-- Every applied lineage.yaml, per project, numbered from 1.
CREATE TABLE lineage_declarations (
    project     TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    digest      TEXT    NOT NULL,           -- sha256 of the text
    file_name   TEXT    NOT NULL,
    yaml        TEXT    NOT NULL,
    applied_at  BIGINT  NOT NULL,
    PRIMARY KEY (project, version)
);

-- Payloads for the catalogs, written in the same transaction as the graph change that caused
-- them and drained in order by a background task. The key makes a replayed event queue nothing.
CREATE TABLE lineage_outbox (
    target      TEXT    NOT NULL,           -- datahub | openlineage
    event_key   TEXT    NOT NULL,
    seq         BIGINT  NOT NULL,           -- send order within a target
    payload     TEXT    NOT NULL,           -- JSON body
    state       TEXT    NOT NULL,           -- pending | sent | dead
    attempts    INTEGER NOT NULL,
    next_at     BIGINT  NOT NULL,           -- not before (unix microseconds)
    lease_until BIGINT  NOT NULL,           -- a drainer holds it until then
    last_error  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    sent_at     BIGINT  NOT NULL,
    PRIMARY KEY (target, event_key)
);
CREATE INDEX lineage_outbox_pending ON lineage_outbox (target, state, seq);
