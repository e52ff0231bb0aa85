-- Signals of gate nodes (SignalService): created by the scheduler when a gate starts, given a
-- value by a person (FlyteRemote.approve / set_signal). set_at = 0 while no value is set.
CREATE TABLE signals (
    project     TEXT    NOT NULL,
    domain      TEXT    NOT NULL,
    execution   TEXT    NOT NULL,
    signal_id   TEXT    NOT NULL,
    type        BLOB   NOT NULL,          -- LiteralType
    value       BLOB   NOT NULL,          -- Literal, empty until set
    created_at  BIGINT  NOT NULL,
    set_at      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (project, domain, execution, signal_id)
);
