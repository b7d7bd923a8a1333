-- Security monitoring. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- The audit log itself is the chained, signed segment files under <data>/audit/; this is the
-- index for queries and the dashboard, rebuilt from the log when it falls behind.

-- One row per audit event. id is the shipper's unique event id: a re-sent batch is a no-op.
-- seq is the record's place in the audit log; time_ms the event's time (unix milliseconds).
CREATE TABLE audit_events (
    id        TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    time_ms   BIGINT NOT NULL,
    source    TEXT NOT NULL,
    service   TEXT,
    principal TEXT NOT NULL,
    decision  TEXT NOT NULL,
    stage     TEXT NOT NULL,
    route     TEXT NOT NULL,
    method    TEXT NOT NULL,
    path      TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    status    INTEGER NOT NULL,
    body      TEXT NOT NULL
);
CREATE INDEX audit_events_seq ON audit_events (seq);
CREATE INDEX audit_events_time ON audit_events (time_ms);
CREATE INDEX audit_events_principal ON audit_events (principal, time_ms);
CREATE INDEX audit_events_decision ON audit_events (decision, time_ms);


-- Detector state kept across restarts (the learned service-edge baseline), as JSON.
CREATE TABLE monitor_state (
    name       TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
