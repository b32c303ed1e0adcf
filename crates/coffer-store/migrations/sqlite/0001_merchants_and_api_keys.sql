CREATE TABLE merchants (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL,
    webhook_url     TEXT,
    webhook_secret  TEXT NOT NULL,
    created_at      TEXT NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY NOT NULL,
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    label           TEXT NOT NULL,
    secret_hash     BLOB NOT NULL,
    created_at      TEXT NOT NULL,
    revoked_at      TEXT
);

CREATE INDEX api_keys_by_merchant ON api_keys (merchant_id);
