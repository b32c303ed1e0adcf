CREATE TABLE merchant_wallets (
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    chain_id        BIGINT NOT NULL,
    xpub            TEXT NOT NULL,
    next_index      BIGINT NOT NULL DEFAULT 0,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, chain_id)
);

CREATE TABLE payment_orders (
    id                      BIGSERIAL PRIMARY KEY,
    order_id                TEXT NOT NULL UNIQUE,
    merchant_id             TEXT NOT NULL REFERENCES merchants (id),
    chain_id                BIGINT NOT NULL,
    blockchain              TEXT NOT NULL,
    currency                TEXT NOT NULL,
    asset_address           TEXT,
    decimals                BIGINT NOT NULL,
    amount                  TEXT NOT NULL,
    amount_sort_key         TEXT NOT NULL,
    underpayment_tolerance  TEXT NOT NULL,
    amount_paid             TEXT NOT NULL,
    status                  TEXT NOT NULL,
    sub_status              TEXT,
    receiving_address       TEXT NOT NULL,
    derivation_index        BIGINT NOT NULL,
    order_info              TEXT NOT NULL,
    nonce                   BIGINT NOT NULL,
    webhook_url             TEXT,
    redirect_url            TEXT,
    idempotency_key         TEXT,
    request_hash            TEXT,
    closed                  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms           BIGINT NOT NULL,
    expires_at_ms           BIGINT NOT NULL,
    monitor_until_ms        BIGINT NOT NULL,
    confirmed_at_ms         BIGINT,
    updated_at_ms           BIGINT NOT NULL,
    version                 BIGINT NOT NULL DEFAULT 0,
    UNIQUE (merchant_id, nonce),
    UNIQUE (merchant_id, idempotency_key),
    UNIQUE (chain_id, receiving_address)
);
CREATE INDEX payment_orders_by_merchant ON payment_orders (merchant_id, created_at_ms);
CREATE INDEX payment_orders_watched ON payment_orders (chain_id, id);
CREATE INDEX payment_orders_by_status ON payment_orders (chain_id, status, id);
CREATE INDEX payment_orders_expiring ON payment_orders (status, expires_at_ms);

CREATE TABLE payments (
    id              BIGSERIAL PRIMARY KEY,
    chain_id        BIGINT NOT NULL,
    tx_hash         TEXT NOT NULL,
    log_index       BIGINT NOT NULL,
    order_id        TEXT NOT NULL REFERENCES payment_orders (order_id),
    asset_address   TEXT,
    sender          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    amount          TEXT NOT NULL,
    block_number    BIGINT NOT NULL,
    block_hash      TEXT NOT NULL,
    block_time      BIGINT NOT NULL,
    orphaned        BOOLEAN NOT NULL DEFAULT FALSE,
    detected_at_ms  BIGINT NOT NULL,
    UNIQUE (chain_id, tx_hash, log_index)
);
CREATE INDEX payments_by_order ON payments (order_id);
CREATE INDEX payments_by_block ON payments (chain_id, block_number);

CREATE TABLE chain_cursors (
    chain_id        BIGINT PRIMARY KEY,
    block_number    BIGINT NOT NULL,
    block_hash      TEXT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);

CREATE TABLE chain_blocks (
    chain_id        BIGINT NOT NULL,
    block_number    BIGINT NOT NULL,
    block_hash      TEXT NOT NULL,
    parent_hash     TEXT NOT NULL,
    PRIMARY KEY (chain_id, block_number)
);

CREATE TABLE events (
    id              BIGSERIAL PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    order_id        TEXT,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL
);
CREATE INDEX events_by_merchant ON events (merchant_id, id);

CREATE TABLE webhook_deliveries (
    id                  BIGSERIAL PRIMARY KEY,
    delivery_id         TEXT NOT NULL UNIQUE,
    event_id            TEXT NOT NULL REFERENCES events (event_id),
    merchant_id         TEXT NOT NULL REFERENCES merchants (id),
    url                 TEXT NOT NULL,
    status              TEXT NOT NULL,
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT NOT NULL,
    locked_until_ms     BIGINT NOT NULL DEFAULT 0,
    last_status_code    BIGINT,
    last_error          TEXT,
    created_at_ms       BIGINT NOT NULL,
    delivered_at_ms     BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at_ms);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    id              BIGSERIAL PRIMARY KEY,
    delivery_id     TEXT NOT NULL REFERENCES webhook_deliveries (delivery_id),
    attempted_at_ms BIGINT NOT NULL,
    status_code     BIGINT,
    error           TEXT,
    duration_ms     BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id);
