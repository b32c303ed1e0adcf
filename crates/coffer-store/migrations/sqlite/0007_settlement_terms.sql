-- What each settlement's authorization said: a hash of its EIP-712 digest (payer, payee, value,
-- validity window, nonce, token, chain) and the signature. A repeated settle answers from the
-- journal only when it presents these same terms; anything else naming the same (payer, nonce)
-- is refused. NULL for rows journaled before this column existed.
ALTER TABLE settlements ADD COLUMN terms_hash TEXT;

-- The order a settlement was made for (a Pelago order paid with X-PAYMENT), so that whichever
-- path records the sale — the request itself or the reconciler's sweep — records it into that
-- order. NULL for settlements not made for an order.
ALTER TABLE settlements ADD COLUMN order_id TEXT;
