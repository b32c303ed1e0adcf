-- GatePay-style credentials (X-GatePay-Certificate-ClientId + HMAC-SHA512 secret): the secret is
-- kept to check request signatures and to sign notifications.
CREATE TABLE gatepay_credentials (
    client_id       TEXT PRIMARY KEY NOT NULL,
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    secret          TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    revoked_at_ms   BIGINT
);
CREATE INDEX gatepay_credentials_by_merchant ON gatepay_credentials (merchant_id);

-- Nonces seen per client, so a signed request cannot be replayed (kept past the timestamp
-- window, then forgotten).
CREATE TABLE gatepay_nonces (
    client_id       TEXT NOT NULL,
    nonce           TEXT NOT NULL,
    seen_at_ms      BIGINT NOT NULL,
    PRIMARY KEY (client_id, nonce)
);
CREATE INDEX gatepay_nonces_by_age ON gatepay_nonces (seen_at_ms);

-- GatePay's names for a payment order: prepayId and the merchant's unique merchantTradeNo.
CREATE TABLE gatepay_orders (
    prepay_id           TEXT PRIMARY KEY NOT NULL,
    merchant_id         TEXT NOT NULL REFERENCES merchants (id),
    merchant_trade_no   TEXT NOT NULL,
    order_id            TEXT NOT NULL UNIQUE,
    client_id           TEXT NOT NULL,
    created_at_ms       BIGINT NOT NULL,
    UNIQUE (merchant_id, merchant_trade_no)
);

-- Refunds as requested (sending them on chain is separate).
CREATE TABLE gatepay_refunds (
    merchant_id         TEXT NOT NULL REFERENCES merchants (id),
    refund_request_id   TEXT NOT NULL,
    prepay_id           TEXT NOT NULL REFERENCES gatepay_orders (prepay_id),
    refund_amount       TEXT NOT NULL,
    refund_reason       TEXT NOT NULL,
    status              TEXT NOT NULL,
    created_at_ms       BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, refund_request_id)
);

-- The fiat price of an order and the rate locked when it was created.
CREATE TABLE order_quotes (
    order_id        TEXT PRIMARY KEY NOT NULL,
    fiat_currency   TEXT NOT NULL,
    fiat_amount     TEXT NOT NULL,
    rate            TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL
);
