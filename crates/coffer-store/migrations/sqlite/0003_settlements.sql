-- The x402 settlement journal: one row per EIP-3009 authorization, written before anything is
-- broadcast, so repeated or concurrent settles share one transaction and a restart resumes it.
CREATE TABLE settlements (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    chain_id        INTEGER NOT NULL,
    token           TEXT NOT NULL,
    payer           TEXT NOT NULL,
    auth_nonce      TEXT NOT NULL,
    pay_to          TEXT NOT NULL,
    value           TEXT NOT NULL,
    network         TEXT NOT NULL,
    status          TEXT NOT NULL,
    signer          TEXT,
    signer_nonce    INTEGER,
    tx_hash         TEXT,
    raw_tx          TEXT,
    error_reason    TEXT,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    UNIQUE (chain_id, token, payer, auth_nonce)
);
CREATE UNIQUE INDEX settlements_signer_nonce ON settlements (chain_id, signer, signer_nonce)
    WHERE signer_nonce IS NOT NULL AND status <> 'failed';
CREATE INDEX settlements_open ON settlements (status, updated_at_ms);

-- OKX-style API credentials (OK-ACCESS-KEY / -SIGN / -PASSPHRASE): the secret is kept to check
-- HMAC signatures; the passphrase only as a SHA-256 hash.
CREATE TABLE okx_credentials (
    access_key      TEXT PRIMARY KEY NOT NULL,
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    secret          TEXT NOT NULL,
    passphrase_hash TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    revoked_at_ms   INTEGER
);
