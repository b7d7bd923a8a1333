-- Identity provider. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Times are unix seconds (BIGINT); JSON documents are TEXT; hashes are lowercase hex or PHC strings.

CREATE TABLE keysets (
    name       TEXT PRIMARY KEY,
    sealed     TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE idp_clients (
    client_id   TEXT PRIMARY KEY,
    secret_hash TEXT,
    config      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE idp_users (
    username      TEXT PRIMARY KEY,
    subject       TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL,
    profile       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE idp_sessions (
    id_hash    TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,
    auth_time  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX idp_sessions_subject ON idp_sessions (subject);

CREATE TABLE idp_auth_requests (
    id         TEXT PRIMARY KEY,
    csrf_hash  TEXT NOT NULL,
    params     TEXT NOT NULL,
    subject    TEXT,
    auth_time  BIGINT,
    expires_at BIGINT NOT NULL
);

CREATE TABLE idp_codes (
    code_hash  TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    data       TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE TABLE idp_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX idp_refresh_tokens_grant ON idp_refresh_tokens (grant_id);

-- Revoked access-token jtis and revoked grants (a code's or a refresh family's tokens).
CREATE TABLE idp_revocations (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX idp_revocations_created ON idp_revocations (created_at);

-- private_key_jwt assertion ids already used (RFC 7523 replay protection).
CREATE TABLE idp_assertion_jtis (
    client_id  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);

CREATE TABLE idp_consents (
    subject    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (subject, client_id)
);
