-- x402 sales: settlements to a merchant's x402 payTo address are recorded as payment orders.
--
-- Orders gain a `source`: 'deposit' (an order paid to its own HD deposit address, the only kind
-- until now), 'x402' (a settlement through the facilitator or the paywall) or 'pelago' (an order
-- of the Pelago-compatible endpoint). Only deposit orders need a unique receiving address and a
-- unique merchant nonce; x402 orders are all paid to the merchant's payTo address.
ALTER TABLE payment_orders ADD COLUMN source TEXT NOT NULL DEFAULT 'deposit';
ALTER TABLE payment_orders DROP CONSTRAINT payment_orders_merchant_id_nonce_key;
ALTER TABLE payment_orders DROP CONSTRAINT payment_orders_chain_id_receiving_address_key;
CREATE UNIQUE INDEX payment_orders_nonce ON payment_orders (merchant_id, nonce) WHERE source = 'deposit';
CREATE UNIQUE INDEX payment_orders_receiving_address ON payment_orders (chain_id, receiving_address)
    WHERE source = 'deposit';

-- A merchant's x402 payTo addresses, per chain (address in lower-case hex).
CREATE TABLE x402_pay_to (
    chain_id        BIGINT NOT NULL,
    address         TEXT NOT NULL,
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (chain_id, address)
);
CREATE INDEX x402_pay_to_by_merchant ON x402_pay_to (merchant_id);

-- One row per recorded x402 sale. An EIP-3009 sale is keyed by its authorization
-- (chain, token, payer, nonce), so a repeated settle never records twice; a tx-hash proof has
-- no authorization nonce, and its payment's (chain, tx_hash, log_index) is unique instead.
CREATE TABLE x402_sales (
    id              BIGSERIAL PRIMARY KEY,
    order_id        TEXT NOT NULL UNIQUE REFERENCES payment_orders (order_id),
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    kind            TEXT NOT NULL,
    chain_id        BIGINT NOT NULL,
    token           TEXT NOT NULL,
    payer           TEXT NOT NULL,
    auth_nonce      TEXT,
    tx_hash         TEXT NOT NULL,
    log_index       BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    UNIQUE (chain_id, token, payer, auth_nonce)
);
