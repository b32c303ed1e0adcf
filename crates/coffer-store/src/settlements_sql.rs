// The x402 settlement journal, compiled once per backend (see `crate::shared_sql`).

use sqlx::Row;

use crate::{Constraint, StoreError};
use crate::fetch;
use crate::settlement_rows::{NewSettlement, SettlementKey, SettlementRow, SettlementStatus, SignedSettlement};

fn settlement_row(row: &DbRow) -> Result<SettlementRow, StoreError> {
    let read = StoreError::classify("settlement");
    let status: String = row.try_get("status").map_err(&read)?;
    let chain_id: i64 = row.try_get("chain_id").map_err(&read)?;
    let signer_nonce: Option<i64> = row.try_get("signer_nonce").map_err(&read)?;
    let corrupt = |what, detail: String| StoreError::Corrupt { what, detail };
    Ok(SettlementRow {
        id: row.try_get("id").map_err(&read)?,
        key: SettlementKey {
            chain_id: u64::try_from(chain_id).map_err(|e| corrupt("chain id", e.to_string()))?,
            token: row.try_get("token").map_err(&read)?,
            payer: row.try_get("payer").map_err(&read)?,
            auth_nonce: row.try_get("auth_nonce").map_err(&read)?,
        },
        pay_to: row.try_get("pay_to").map_err(&read)?,
        value: row.try_get("value").map_err(&read)?,
        network: row.try_get("network").map_err(&read)?,
        terms_hash: row.try_get("terms_hash").map_err(&read)?,
        order_id: row.try_get("order_id").map_err(&read)?,
        status: SettlementStatus::parse(&status).ok_or_else(|| corrupt("settlement status", status.clone()))?,
        signer: row.try_get("signer").map_err(&read)?,
        signer_nonce: signer_nonce.map(|n| u64::try_from(n).unwrap_or_default()),
        tx_hash: row.try_get("tx_hash").map_err(&read)?,
        raw_tx: row.try_get("raw_tx").map_err(&read)?,
        error_reason: row.try_get("error_reason").map_err(&read)?,
        created_at_ms: row.try_get("created_at_ms").map_err(&read)?,
        updated_at_ms: row.try_get("updated_at_ms").map_err(&read)?,
    })
}

/// A settlement row with its current transaction's signed bytes, which are kept once per
/// transaction in `settlement_transactions` (a batch's rows all share one), not per row.
/// `s.raw_tx` is only read for rows journaled before that table existed.
const SELECT_SETTLEMENT: &str = "SELECT s.id, s.chain_id, s.token, s.payer, s.auth_nonce, s.pay_to, s.value, s.network,
        s.terms_hash, s.order_id, s.status, s.signer, s.signer_nonce, s.tx_hash, COALESCE(t.raw_tx, s.raw_tx) AS raw_tx, s.error_reason,
        s.created_at_ms, s.updated_at_ms
     FROM settlements s LEFT JOIN settlement_transactions t ON t.tx_hash = s.tx_hash";

fn chain(chain_id: u64) -> Result<i64, StoreError> {
    i64::try_from(chain_id).map_err(|_| StoreError::Corrupt { what: "chain id", detail: "exceeds 2^63".to_owned() })
}

async fn settlement_by_key(pool: &DbPool, key: &SettlementKey) -> Result<Option<SettlementRow>, StoreError> {
    let sql = format!("{SELECT_SETTLEMENT} WHERE s.chain_id = $1 AND s.token = $2 AND s.payer = $3 AND s.auth_nonce = $4");
    let query = sqlx::query(&sql)
        .bind(chain(key.chain_id)?)
        .bind(&key.token)
        .bind(&key.payer)
        .bind(&key.auth_nonce);
    fetch::optional(pool, query, settlement_row).await
}

#[async_trait::async_trait]
impl crate::Journal for ThisStore {
    async fn claim_settlement(&self, new: &NewSettlement) -> Result<(SettlementRow, bool), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO settlements (chain_id, token, payer, auth_nonce, pay_to, value, network, terms_hash,
                 order_id, status, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $10)
             ON CONFLICT (chain_id, token, payer, auth_nonce) DO NOTHING
             RETURNING *",
        )
        .bind(chain(new.key.chain_id)?)
        .bind(&new.key.token)
        .bind(&new.key.payer)
        .bind(&new.key.auth_nonce)
        .bind(&new.pay_to)
        .bind(&new.value)
        .bind(&new.network)
        .bind(&new.terms_hash)
        .bind(&new.order_id)
        .bind(new.now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        match inserted {
            Some(row) => Ok((settlement_row(&row)?, true)),
            None => settlement_by_key(&self.pool, &new.key)
                .await?
                .map(|row| (row, false))
                .ok_or(StoreError::NotFound("settlement")),
        }
    }

    async fn settlement(&self, key: &SettlementKey) -> Result<Option<SettlementRow>, StoreError> {
        settlement_by_key(&self.pool, key).await
    }

    async fn settlement_by_tx_hash(&self, tx_hash: &str) -> Result<Option<SettlementRow>, StoreError> {
        // Any transaction at the settlement's signer nonce finds it: a fee bump replaced the
        // hash the caller was given, or a batch shares one transaction.
        let sql = format!(
            "{SELECT_SETTLEMENT}
             WHERE s.id = (
                 SELECT s2.id FROM settlement_transactions t2
                 JOIN settlements s2 ON s2.chain_id = t2.chain_id AND s2.signer = t2.signer AND s2.signer_nonce = t2.signer_nonce
                 WHERE t2.tx_hash = $1
                 ORDER BY CASE s2.status WHEN 'succeeded' THEN 0 WHEN 'broadcast' THEN 1 WHEN 'pending' THEN 2 ELSE 3 END, s2.id
                 LIMIT 1)"
        );
        let query = sqlx::query(&sql)
        .bind(tx_hash);
        fetch::optional(&self.pool, query, settlement_row).await
    }

    async fn next_signer_nonce(&self, chain_id: u64, signer: &str) -> Result<Option<u64>, StoreError> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(signer_nonce) FROM settlement_transactions WHERE chain_id = $1 AND signer = $2")
                .bind(chain(chain_id)?)
                .bind(signer)
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::Database)?;
        Ok(max.map(|n| u64::try_from(n).unwrap_or_default() + 1))
    }

    async fn record_signed(&self, ids: &[i64], signed: &SignedSettlement, now_ms: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let nonce = i64::try_from(signed.signer_nonce)
            .map_err(|_| StoreError::Corrupt { what: "signer nonce", detail: "exceeds 2^63".to_owned() })?;
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        sqlx::query(
            "INSERT INTO settlement_transactions (tx_hash, chain_id, signer, signer_nonce, raw_tx, replaces, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, NULL, $6)",
        )
        .bind(&signed.tx_hash)
        .bind(chain(signed.chain_id)?)
        .bind(&signed.signer)
        .bind(nonce)
        .bind(&signed.raw_tx)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::unique(Constraint::SignerNonce))?;
        // One statement for the whole batch; every row must still be pending.
        let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 5)).collect();
        let sql = format!(
            "UPDATE settlements SET status = 'broadcast', signer = $1, signer_nonce = $2, tx_hash = $3, updated_at_ms = $4
             WHERE status = 'pending' AND id IN ({})",
            placeholders.join(", ")
        );
        let mut update = sqlx::query(&sql)
            .bind(&signed.signer)
            .bind(nonce)
            .bind(&signed.tx_hash)
            .bind(now_ms);
        for id in ids {
            update = update.bind(id);
        }
        let updated = update.execute(&mut *tx).await.map_err(StoreError::Database)?;
        if usize::try_from(updated.rows_affected()).ok() != Some(ids.len()) {
            return Err(StoreError::Conflict(Constraint::Settlement));
        }
        tx.commit().await.map_err(StoreError::Database)
    }

    async fn void_transaction(&self, tx_hash: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        sqlx::query("DELETE FROM settlements WHERE tx_hash = $1 AND status = 'broadcast'")
            .bind(tx_hash)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Database)?;
        sqlx::query("DELETE FROM settlement_transactions WHERE tx_hash = $1")
            .bind(tx_hash)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Database)?;
        tx.commit().await.map_err(StoreError::Database)
    }

    async fn release_settlement_claim(&self, id: i64) -> Result<bool, StoreError> {
        let released = sqlx::query("DELETE FROM settlements WHERE id = $1 AND status = 'pending'")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        Ok(released.rows_affected() == 1)
    }

    async fn replace_transaction(
        &self,
        replaced: &str,
        signed: &SignedSettlement,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let nonce = i64::try_from(signed.signer_nonce)
            .map_err(|_| StoreError::Corrupt { what: "signer nonce", detail: "exceeds 2^63".to_owned() })?;
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        sqlx::query(
            "INSERT INTO settlement_transactions (tx_hash, chain_id, signer, signer_nonce, raw_tx, replaces, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&signed.tx_hash)
        .bind(chain(signed.chain_id)?)
        .bind(&signed.signer)
        .bind(nonce)
        .bind(&signed.raw_tx)
        .bind(replaced)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::unique(Constraint::SettlementTransaction))?;
        let updated = sqlx::query(
            "UPDATE settlements SET tx_hash = $1, raw_tx = NULL, updated_at_ms = $2 WHERE tx_hash = $3 AND status = 'broadcast'",
        )
        .bind(&signed.tx_hash)
        .bind(now_ms)
        .bind(replaced)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::Database)?;
        tx.commit().await.map_err(StoreError::Database)?;
        Ok(updated.rows_affected())
    }

    async fn transactions_at_nonce(
        &self,
        chain_id: u64,
        signer: &str,
        signer_nonce: u64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let nonce = i64::try_from(signer_nonce)
            .map_err(|_| StoreError::Corrupt { what: "signer nonce", detail: "exceeds 2^63".to_owned() })?;
        let rows = sqlx::query(
            "SELECT tx_hash, raw_tx FROM settlement_transactions
             WHERE chain_id = $1 AND signer = $2 AND signer_nonce = $3 ORDER BY created_at_ms, tx_hash",
        )
        .bind(chain(chain_id)?)
        .bind(signer)
        .bind(nonce)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        rows.iter()
            .map(|row| {
                let read = StoreError::classify("settlement transaction");
                Ok((row.try_get("tx_hash").map_err(&read)?, row.try_get("raw_tx").map_err(&read)?))
            })
            .collect()
    }

    async fn finish_settlement(
        &self,
        id: i64,
        from: SettlementStatus,
        to: SettlementStatus,
        error_reason: Option<&str>,
        mined_tx: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE settlements SET status = $1, error_reason = $2, updated_at_ms = $3,
                 tx_hash = COALESCE($4, tx_hash),
                 raw_tx = CASE WHEN $4 IS NULL THEN raw_tx ELSE NULL END
             WHERE id = $5 AND status = $6",
        )
        .bind(to.as_str())
        .bind(error_reason)
        .bind(now_ms)
        .bind(mined_tx)
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        Ok(updated.rows_affected() == 1)
    }

    async fn finish_broadcast_settlements(
        &self,
        ids: &[i64],
        to: SettlementStatus,
        error_reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "UPDATE settlements SET status = $1, error_reason = $2, updated_at_ms = $3
             WHERE status = 'broadcast' AND id IN ({})
             RETURNING id",
            placeholders.join(", ")
        );
        let mut update = sqlx::query_scalar(&sql).bind(to.as_str()).bind(error_reason).bind(now_ms);
        for id in ids {
            update = update.bind(id);
        }
        update.fetch_all(&self.pool).await.map_err(StoreError::Database)
    }

    async fn open_settlements(&self, limit: u64) -> Result<Vec<SettlementRow>, StoreError> {
        let sql = format!("{SELECT_SETTLEMENT} WHERE s.status = 'broadcast' ORDER BY s.updated_at_ms LIMIT $1");
        let query = sqlx::query(&sql)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        fetch::all(&self.pool, query, settlement_row).await
    }

    async fn failed_settlements_since(&self, since_ms: i64, limit: u64) -> Result<Vec<SettlementRow>, StoreError> {
        let sql = format!(
            "{SELECT_SETTLEMENT} WHERE s.status = 'failed' AND s.updated_at_ms >= $1 ORDER BY s.updated_at_ms LIMIT $2"
        );
        let query = sqlx::query(&sql)
            .bind(since_ms)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        fetch::all(&self.pool, query, settlement_row).await
    }
}
