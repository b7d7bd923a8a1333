-- Data protection (palisade-vault). Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Times are unix seconds; flags are BIGINT 0/1. Key material is never stored in clear: sealed is
-- base64 of the material sealed under the master key, with "palisade-vault:key:<name>:v<version>"
-- as associated data.

-- One row per named key. key_id is the random 32-bit id written into every ciphertext header.
-- deletion_at: when a scheduled deletion takes effect; deleted_at: when the material was purged
-- (the row stays as a tombstone so the name is never reused).
CREATE TABLE vault_keys (
    name                   TEXT PRIMARY KEY,
    key_type               TEXT NOT NULL,
    key_id                 BIGINT NOT NULL,
    exportable             BIGINT NOT NULL,
    convergent             BIGINT NOT NULL,
    latest_version         BIGINT NOT NULL,
    min_decryption_version BIGINT NOT NULL,
    min_encryption_version BIGINT NOT NULL,
    disabled               BIGINT NOT NULL,
    deletion_at            BIGINT,
    deleted_at             BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);

-- One row per key version. public_key: base64 of an Ed25519 public key (NULL for secret keys).
CREATE TABLE vault_key_versions (
    name       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    sealed     TEXT NOT NULL,
    public_key TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

-- Random (vault) tokens. lookup: hex HMAC-SHA256 of format and value under a key derived from the
-- tokenization key; det_lookup equals lookup for deterministic tokens (one token per value) and
-- is NULL otherwise. sealed_value: base64 AES-256-GCM of the value bound to key name and token.
CREATE TABLE vault_tokens (
    key_name     TEXT NOT NULL,
    token        TEXT NOT NULL,
    version      BIGINT NOT NULL,
    format       TEXT NOT NULL,
    lookup       TEXT NOT NULL,
    det_lookup   TEXT,
    sealed_value TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (key_name, token)
);
CREATE UNIQUE INDEX vault_tokens_det ON vault_tokens (key_name, det_lookup);
CREATE INDEX vault_tokens_lookup ON vault_tokens (key_name, lookup);
