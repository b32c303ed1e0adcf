-- A merchant's hot wallet per chain, for money going out (refunds, payouts): its address, and
-- its private key sealed with the master key like the other secrets. `wallet_id` is
-- `<merchant id>:<chain id>`, the row the sealed key is bound to.
CREATE TABLE payout_wallets (
    wallet_id       TEXT PRIMARY KEY NOT NULL,
    merchant_id     TEXT NOT NULL REFERENCES merchants (id),
    chain_id        INTEGER NOT NULL,
    address         TEXT NOT NULL,
    private_key     TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    UNIQUE (merchant_id, chain_id)
);
