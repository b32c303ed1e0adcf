-- The x402 settlement journal: one row per EIP-3009 authorization, written before anything is
-- broadcast, so repeated or concurrent settles share one transaction and a restart resumes it.
CREATE TABLE settlements (
    id              BIGSERIAL PRIMARY KEY,
    chain_id        BIGINT NOT NULL,
    token           TEXT NOT NULL,
    payer           TEXT NOT NULL,
    auth_nonce      TEXT NOT NULL,
    pay_to          TEXT NOT NULL,
    value           TEXT NOT NULL,
    network         TEXT NOT NULL,
    status          TEXT NOT NULL,
    signer          TEXT,
    signer_nonce    BIGINT,
    tx_hash         TEXT,
    raw_tx          TEXT,
    error_reason    TEXT,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    UNIQUE (chain_id, token, payer, auth_nonce)
);
CREATE UNIQUE INDEX settlements_signer_nonce ON settlements (chain_id, signer, signer_nonce)
    WHERE signer_nonce IS NOT NULL AND status <> 'failed';
CREATE INDEX settlements_open ON settlements (status, updated_at_ms);
