// Claims on authorizations presented to paid routes, compiled once per backend (see
// `crate::shared_sql`).

use crate::StoreError;
use crate::payment_claims::NewPaymentClaim;
use crate::settlement_rows::SettlementKey;

fn chain(chain_id: u64) -> Result<i64, StoreError> {
    i64::try_from(chain_id).map_err(|_| StoreError::Corrupt { what: "chain id", detail: "exceeds 2^63".to_owned() })
}

#[async_trait::async_trait]
impl crate::PaymentClaims for ThisStore {
    async fn claim_payment(&self, claim: &NewPaymentClaim) -> Result<bool, StoreError> {
        // One statement: a new row, or a lapsed one taken over; a live claim is left alone and
        // nothing is returned.
        let claimed = sqlx::query(
            "INSERT INTO payment_claims (chain_id, token, payer, auth_nonce, holder, claimed_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (chain_id, token, payer, auth_nonce) DO UPDATE
                 SET holder = excluded.holder, claimed_at_ms = excluded.claimed_at_ms,
                     expires_at_ms = excluded.expires_at_ms
                 WHERE payment_claims.expires_at_ms <= excluded.claimed_at_ms
             RETURNING holder",
        )
        .bind(chain(claim.key.chain_id)?)
        .bind(&claim.key.token)
        .bind(&claim.key.payer)
        .bind(&claim.key.auth_nonce)
        .bind(&claim.holder)
        .bind(claim.now_ms)
        .bind(claim.expires_at_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        Ok(claimed.is_some())
    }

    async fn release_payment(&self, key: &SettlementKey, holder: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM payment_claims
             WHERE chain_id = $1 AND token = $2 AND payer = $3 AND auth_nonce = $4 AND holder = $5",
        )
        .bind(chain(key.chain_id)?)
        .bind(&key.token)
        .bind(&key.payer)
        .bind(&key.auth_nonce)
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        Ok(())
    }
}
