-- x402 sales: settlements to a merchant's x402 payTo address are recorded as payment orders.
--
-- Orders gain a `source`: 'deposit' (an order paid to its own HD deposit address, the only kind
-- until now), 'x402' (a settlement through the facilitator or the paywall) or 'pelago' (an order
-- of the Pelago-compatible endpoint). Only deposit orders need a unique receiving address and a
-- unique merchant nonce; x402 orders are all paid to the merchant's payTo address. SQLite cannot
-- drop a table constraint, so payment_orders is rebuilt, and payments with it (its foreign key
-- names the table), without turning foreign keys off.
CREATE TABLE payment_orders_v5 (
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
    source                  TEXT NOT NULL DEFAULT 'deposit',
    UNIQUE (merchant_id, idempotency_key)
);
INSERT INTO payment_orders_v5 (
    id, order_id, merchant_id, chain_id, blockchain, currency, asset_address, decimals, amount, amount_sort_key,
    underpayment_tolerance, amount_paid, status, sub_status, receiving_address, derivation_index, order_info, nonce,
    webhook_url, redirect_url, idempotency_key, request_hash, closed, created_at_ms, expires_at_ms, monitor_until_ms,
    confirmed_at_ms, updated_at_ms, version)
SELECT
    id, order_id, merchant_id, chain_id, blockchain, currency, asset_address, decimals, amount, amount_sort_key,
    underpayment_tolerance, amount_paid, status, sub_status, receiving_address, derivation_index, order_info, nonce,
    webhook_url, redirect_url, idempotency_key, request_hash, closed, created_at_ms, expires_at_ms, monitor_until_ms,
    confirmed_at_ms, updated_at_ms, version
FROM payment_orders;

CREATE TABLE payments_v5 (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    chain_id        INTEGER NOT NULL,
    tx_hash         TEXT NOT NULL,
    log_index       INTEGER NOT NULL,
    order_id        TEXT NOT NULL REFERENCES payment_orders_v5 (order_id),
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
INSERT INTO payments_v5 (
    id, chain_id, tx_hash, log_index, order_id, asset_address, sender, recipient, amount, block_number, block_hash,
    block_time, orphaned, detected_at_ms)
SELECT
    id, chain_id, tx_hash, log_index, order_id, asset_address, sender, recipient, amount, block_number, block_hash,
    block_time, orphaned, detected_at_ms
FROM payments;

DROP TABLE payments;
DROP TABLE payment_orders;
-- Renaming rewrites payments_v5's foreign key to the new name.
ALTER TABLE payment_orders_v5 RENAME TO payment_orders;
ALTER TABLE payments_v5 RENAME TO payments;

CREATE UNIQUE INDEX payment_orders_nonce ON payment_orders (merchant_id, nonce) WHERE source = 'deposit';
CREATE UNIQUE INDEX payment_orders_receiving_address ON payment_orders (chain_id, receiving_address)
    WHERE source = 'deposit';
CREATE INDEX payment_orders_by_merchant ON payment_orders (merchant_id, created_at_ms);
CREATE INDEX payment_orders_watched ON payment_orders (chain_id, id);
CREATE INDEX payment_orders_by_status ON payment_orders (chain_id, status, id);
CREATE INDEX payment_orders_expiring ON payment_orders (status, expires_at_ms);
CREATE INDEX payments_by_order ON payments (order_id);
CREATE INDEX payments_by_block ON payments (chain_id, block_number);

-- A merchant's x402 payTo addresses, per chain (address in lower-case hex).
CREATE TABLE x402_pay_to (
    chain_id        INTEGER NOT NULL,
    address         TEXT NOT NULL,
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    created_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (chain_id, address)
);
CREATE INDEX x402_pay_to_by_merchant ON x402_pay_to (merchant_id);

-- One row per recorded x402 sale. An EIP-3009 sale is keyed by its authorization
-- (chain, token, payer, nonce), so a repeated settle never records twice; a tx-hash proof has
-- no authorization nonce, and its payment's (chain, tx_hash, log_index) is unique instead.
CREATE TABLE x402_sales (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id        TEXT NOT NULL UNIQUE REFERENCES payment_orders (order_id),
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    kind            TEXT NOT NULL,
    chain_id        INTEGER NOT NULL,
    token           TEXT NOT NULL,
    payer           TEXT NOT NULL,
    auth_nonce      TEXT,
    tx_hash         TEXT NOT NULL,
    log_index       INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    UNIQUE (chain_id, token, payer, auth_nonce)
);
