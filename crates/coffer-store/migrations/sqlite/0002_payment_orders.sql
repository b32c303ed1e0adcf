CREATE TABLE merchant_wallets (
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    chain_id        INTEGER NOT NULL,
    xpub            TEXT NOT NULL,
    next_index      INTEGER NOT NULL DEFAULT 0,
    created_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, chain_id)
);

CREATE TABLE payment_orders (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id                TEXT NOT NULL UNIQUE,
    merchant_id             TEXT NOT NULL REFERENCES merchants (id),
    chain_id                INTEGER NOT NULL,
    blockchain              TEXT NOT NULL,
    currency                TEXT NOT NULL,
    asset_address           TEXT,
    decimals                INTEGER NOT NULL,
    amount                  TEXT NOT NULL,
    amount_sort_key         TEXT NOT NULL,
    underpayment_tolerance  TEXT NOT NULL,
    amount_paid             TEXT NOT NULL,
    status                  TEXT NOT NULL,
    sub_status              TEXT,
    receiving_address       TEXT NOT NULL,
    derivation_index        INTEGER NOT NULL,
    order_info              TEXT NOT NULL,
    nonce                   INTEGER NOT NULL,
    webhook_url             TEXT,
    redirect_url            TEXT,
    idempotency_key         TEXT,
    request_hash            TEXT,
    closed                  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms           INTEGER NOT NULL,
    expires_at_ms           INTEGER NOT NULL,
    monitor_until_ms        INTEGER NOT NULL,
    confirmed_at_ms         INTEGER,
    updated_at_ms           INTEGER NOT NULL,
    version                 INTEGER NOT NULL DEFAULT 0,
    UNIQUE (merchant_id, nonce),
    UNIQUE (merchant_id, idempotency_key),
    UNIQUE (chain_id, receiving_address)
);
CREATE INDEX payment_orders_by_merchant ON payment_orders (merchant_id, created_at_ms);
CREATE INDEX payment_orders_watched ON payment_orders (chain_id, id);
CREATE INDEX payment_orders_by_status ON payment_orders (chain_id, status, id);
CREATE INDEX payment_orders_expiring ON payment_orders (status, expires_at_ms);

CREATE TABLE payments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    chain_id        INTEGER NOT NULL,
    tx_hash         TEXT NOT NULL,
    log_index       INTEGER NOT NULL,
    order_id        TEXT NOT NULL REFERENCES payment_orders (order_id),
    asset_address   TEXT,
    sender          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    amount          TEXT NOT NULL,
    block_number    INTEGER NOT NULL,
    block_hash      TEXT NOT NULL,
    block_time      INTEGER NOT NULL,
    orphaned        BOOLEAN NOT NULL DEFAULT FALSE,
    detected_at_ms  INTEGER NOT NULL,
    UNIQUE (chain_id, tx_hash, log_index)
);
CREATE INDEX payments_by_order ON payments (order_id);
CREATE INDEX payments_by_block ON payments (chain_id, block_number);

CREATE TABLE chain_cursors (
    chain_id        INTEGER PRIMARY KEY NOT NULL,
    block_number    INTEGER NOT NULL,
    block_hash      TEXT NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);

CREATE TABLE chain_blocks (
    chain_id        INTEGER NOT NULL,
    block_number    INTEGER NOT NULL,
    block_hash      TEXT NOT NULL,
    parent_hash     TEXT NOT NULL,
    PRIMARY KEY (chain_id, block_number)
);

CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    order_id        TEXT,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL
);
CREATE INDEX events_by_merchant ON events (merchant_id, id);

CREATE TABLE webhook_deliveries (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id         TEXT NOT NULL UNIQUE,
    event_id            TEXT NOT NULL REFERENCES events (event_id),
    merchant_id         TEXT NOT NULL REFERENCES merchants (id),
    url                 TEXT NOT NULL,
    status              TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  INTEGER NOT NULL,
    locked_until_ms     INTEGER NOT NULL DEFAULT 0,
    last_status_code    INTEGER,
    last_error          TEXT,
    created_at_ms       INTEGER NOT NULL,
    delivered_at_ms     INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at_ms);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     TEXT NOT NULL REFERENCES webhook_deliveries (delivery_id),
    attempted_at_ms INTEGER NOT NULL,
    status_code     INTEGER,
    error           TEXT,
    duration_ms     INTEGER NOT NULL
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id);
