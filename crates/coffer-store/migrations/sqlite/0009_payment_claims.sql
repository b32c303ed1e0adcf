-- Single-use claims on x402 payments presented to the paywall: one row per EIP-3009
-- authorization, inserted before the paid request is verified, forwarded or settled, so the same
-- payment header sent to two replicas at once reaches the upstream and the chain at most once.
-- A claim lasts until `expires_at_ms` (a replica that died holding one frees it then) or until
-- its holder releases it because nothing was settled.
CREATE TABLE payment_claims (
    chain_id        INTEGER NOT NULL,
    token           TEXT NOT NULL,
    payer           TEXT NOT NULL,
    auth_nonce      TEXT NOT NULL,
    -- A random value naming the request that holds the claim; only it may release the claim.
    holder          TEXT NOT NULL,
    claimed_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (chain_id, token, payer, auth_nonce)
);
