// Sealing the secret columns as a whole: the census, encrypting values left in plain text, and
// re-encrypting everything under a new master key. Compiled once per backend (see
// `crate::shared_sql`); the backend's `LOCK_SECRET_TABLES` (PostgreSQL only) keeps other
// writers out of the secret tables while a transaction re-seals them.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::StoreError;
use crate::secrets::{MasterKey, SECRET_COLUMNS, SecretsCensus, open_with, sealed_key_id};

/// Which stored values a re-seal touches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reseal {
    /// Only values in plain text.
    PlainOnly,
    /// Every value not yet sealed with the target key.
    All,
}

impl ThisStore {
    /// Seals, under `to`, every stored secret `reseal` selects, in one transaction. Values
    /// are opened with the store's key or `to` itself; values already sealed with `to` are
    /// left alone, so running it again changes nothing. Each row is updated only if it still
    /// holds what was read (another process's concurrent write wins). Returns how many values
    /// were written.
    async fn reseal(&self, to: &MasterKey, reseal: Reseal) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Database)?;
        if let Some(lock) = LOCK_SECRET_TABLES {
            sqlx::query(lock).execute(&mut *tx).await.map_err(StoreError::Database)?;
        }
        let keys = self.sealer.key().into_iter().chain(std::iter::once(to));
        let mut written = 0;
        for column in SECRET_COLUMNS {
            let only_plain = if reseal == Reseal::PlainOnly {
                format!(" WHERE substr({}, 1, 7) <> 'enc:v1:'", column.column)
            } else {
                String::new()
            };
            let select = format!(
                "SELECT {key} AS row_key, {column} AS stored FROM {table}{only_plain} ORDER BY {key}",
                key = column.key_column,
                column = column.column,
                table = column.table,
            );
            let rows: Vec<DbRow> = sqlx::query(&select).fetch_all(&mut *tx).await.map_err(StoreError::Database)?;
            let update = format!(
                "UPDATE {table} SET {column} = $1 WHERE {key} = $2 AND {column} = $3",
                key = column.key_column,
                column = column.column,
                table = column.table,
            );
            for row in rows {
                let read = StoreError::classify(column.what);
                let row_key: String = row.try_get("row_key").map_err(&read)?;
                let stored: String = row.try_get("stored").map_err(&read)?;
                let plain = match sealed_key_id(&stored) {
                    Some(key_id) if key_id == to.id() => continue,
                    Some(_) => open_with(keys.clone(), column, &row_key, &stored)?,
                    None => stored.clone(),
                };
                let sealed = to.seal(column, &row_key, &plain)?;
                let updated = sqlx::query(&update)
                    .bind(&sealed)
                    .bind(&row_key)
                    .bind(&stored)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::Database)?;
                written += updated.rows_affected();
            }
        }
        tx.commit().await.map_err(StoreError::Database)?;
        Ok(written)
    }

    /// Seals the secrets left in plain text by a version of Coffer that stored them so, when
    /// the store has a key. Cheap when there are none: one counting query.
    pub(crate) async fn seal_plain_secrets(&self) -> Result<(), StoreError> {
        let Some(key) = self.sealer.key() else {
            return Ok(());
        };
        if crate::SecretStorage::secrets_census(self).await?.plain == 0 {
            return Ok(());
        }
        let sealed = self.reseal(key, Reseal::PlainOnly).await?;
        tracing::info!(sealed, key_id = key.id(), "encrypted secrets that were stored in plain text");
        Ok(())
    }
}

#[async_trait::async_trait]
impl crate::SecretStorage for ThisStore {
    fn master_key_id(&self) -> Option<&str> {
        self.sealer.key_id()
    }

    async fn secrets_census(&self) -> Result<SecretsCensus, StoreError> {
        let rows = sqlx::query(
            "SELECT CASE WHEN substr(s, 1, 7) = 'enc:v1:' THEN substr(s, 8, 8) ELSE '' END AS key_id,
                    COUNT(*) AS stored
             FROM (SELECT webhook_secret AS s FROM merchants
                   UNION ALL SELECT secret AS s FROM gatepay_credentials
                   UNION ALL SELECT secret AS s FROM okx_credentials
                   UNION ALL SELECT private_key AS s FROM payout_wallets) AS secrets
             GROUP BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        let mut census = SecretsCensus { plain: 0, sealed: BTreeMap::new() };
        for row in rows {
            let read = StoreError::classify("secrets census");
            let key_id: String = row.try_get("key_id").map_err(&read)?;
            let stored: i64 = row.try_get("stored").map_err(&read)?;
            let stored = u64::try_from(stored).unwrap_or_default();
            if key_id.is_empty() {
                census.plain += stored;
            } else {
                *census.sealed.entry(key_id).or_default() += stored;
            }
        }
        Ok(census)
    }

    async fn reseal_secrets(&self, to: &MasterKey) -> Result<u64, StoreError> {
        self.reseal(to, Reseal::All).await
    }
}
