-- Settlement transactions. One transaction may carry several authorizations (a Multicall3
-- batch), and a stuck one is replaced by a copy with higher fees at the same signer nonce, so
-- the journal keeps every signed transaction, not one per settlement row.
DROP INDEX settlements_signer_nonce;
CREATE INDEX settlements_signer_nonce ON settlements (chain_id, signer, signer_nonce);
CREATE INDEX settlements_tx_hash ON settlements (tx_hash);

CREATE TABLE settlement_transactions (
    tx_hash         TEXT PRIMARY KEY NOT NULL,
    chain_id        BIGINT NOT NULL,
    signer          TEXT NOT NULL,
    signer_nonce    BIGINT NOT NULL,
    raw_tx          TEXT NOT NULL,
    -- The transaction this one replaced with higher fees; NULL for the first at its nonce.
    replaces        TEXT,
    created_at_ms   BIGINT NOT NULL
);
-- One first transaction per signer nonce: two batches can never be given the same nonce.
CREATE UNIQUE INDEX settlement_transactions_first
    ON settlement_transactions (chain_id, signer, signer_nonce) WHERE replaces IS NULL;

INSERT INTO settlement_transactions (tx_hash, chain_id, signer, signer_nonce, raw_tx, replaces, created_at_ms)
SELECT tx_hash, chain_id, signer, signer_nonce, raw_tx, NULL, updated_at_ms
FROM settlements
WHERE tx_hash IS NOT NULL AND signer IS NOT NULL AND signer_nonce IS NOT NULL
    AND raw_tx IS NOT NULL AND status <> 'failed'
ON CONFLICT DO NOTHING;
