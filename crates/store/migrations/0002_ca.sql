-- Workload CA. Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are unix seconds.

-- Signing CAs. state: pending (in the bundle, signs from activates_at on), active (signs),
-- retired (in the bundle until the last SVID it signed expires). cert_pem: the CA certificate
-- first, then any issuers it was imported with. sealed_key: base64 of the PKCS#8 private key
-- sealed under the master key with the CA id as associated data.
CREATE TABLE ca_authorities (
    id           TEXT PRIMARY KEY,
    trust_domain TEXT NOT NULL,
    state        TEXT NOT NULL,
    cert_pem     TEXT NOT NULL,
    sealed_key   TEXT NOT NULL,
    not_after    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    activates_at BIGINT NOT NULL,
    retired_at   BIGINT
);

-- Every SVID issued (serial is lowercase hex), for status counts and for how long a retired
-- CA stays in the bundle.
CREATE TABLE ca_svids (
    serial    TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL,
    ca_id     TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL
);
CREATE INDEX ca_svids_ca ON ca_svids (ca_id, not_after);

-- One-time join tokens, stored only as the SHA-256 (hex) of the token.
CREATE TABLE ca_join_tokens (
    token_hash TEXT PRIMARY KEY,
    spiffe_id  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
