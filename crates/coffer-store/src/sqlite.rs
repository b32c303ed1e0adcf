//! The SQLite backend: one file, WAL journal, foreign keys on, a small connection pool.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use coffer_core::MerchantId;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use crate::migrate::{Migration, pending};
use crate::rows::merchant_id;
use crate::{ApiKeyRow, MerchantRow, NewApiKey, NewMerchant, Store, StoreError};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "merchants_and_api_keys",
        sql: include_str!("../migrations/sqlite/0001_merchants_and_api_keys.sql"),
    },
    Migration {
        version: 2,
        name: "payment_orders",
        sql: include_str!("../migrations/sqlite/0002_payment_orders.sql"),
    },
];

/// A store in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at a `sqlite:` URL and migrates it.
    ///
    /// # Errors
    /// [`StoreError::Database`] when the file cannot be opened, [`StoreError::Migration`] when
    /// a migration fails.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::Database)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(StoreError::Database)?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS coffer_migrations (
                version INTEGER PRIMARY KEY NOT NULL,
                name TEXT NOT NULL,
                applied_at TEXT NOT NULL)",
        )
        .execute(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM coffer_migrations")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        for migration in pending(MIGRATIONS, &applied) {
            let failed = |source| StoreError::Migration {
                version: migration.version,
                source,
            };
            let mut tx = self.pool.begin().await.map_err(failed)?;
            sqlx::raw_sql(migration.sql)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::query(
                "INSERT INTO coffer_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            )
            .bind(migration.version)
            .bind(migration.name)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied migration"
            );
        }
        Ok(())
    }
}

fn merchant_row(row: &SqliteRow) -> Result<MerchantRow, StoreError> {
    let read = StoreError::classify("merchant");
    Ok(MerchantRow {
        id: merchant_id(row.try_get("id").map_err(&read)?)?,
        name: row.try_get("name").map_err(&read)?,
        webhook_url: row.try_get("webhook_url").map_err(&read)?,
        webhook_secret: row.try_get("webhook_secret").map_err(&read)?,
        created_at: row.try_get("created_at").map_err(&read)?,
    })
}

fn api_key_row(row: &SqliteRow) -> Result<ApiKeyRow, StoreError> {
    let read = StoreError::classify("api key");
    Ok(ApiKeyRow {
        id: row.try_get("id").map_err(&read)?,
        merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
        label: row.try_get("label").map_err(&read)?,
        secret_hash: row.try_get("secret_hash").map_err(&read)?,
        created_at: row.try_get("created_at").map_err(&read)?,
        revoked_at: row.try_get("revoked_at").map_err(&read)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(StoreError::Database)
    }

    async fn insert_merchant(&self, merchant: NewMerchant) -> Result<MerchantRow, StoreError> {
        sqlx::query(
            "INSERT INTO merchants (id, name, webhook_url, webhook_secret, created_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(merchant.id.as_str())
        .bind(&merchant.name)
        .bind(&merchant.webhook_url)
        .bind(&merchant.webhook_secret)
        .bind(merchant.created_at)
        .execute(&self.pool)
        .await
        .map_err(StoreError::classify("merchant"))?;
        Ok(merchant.into())
    }

    async fn merchant(&self, id: &MerchantId) -> Result<MerchantRow, StoreError> {
        let row = sqlx::query("SELECT * FROM merchants WHERE id = ?")
            .bind(id.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::classify("merchant"))?;
        merchant_row(&row)
    }

    async fn set_merchant_webhook_url(
        &self,
        id: &MerchantId,
        url: Option<&str>,
    ) -> Result<MerchantRow, StoreError> {
        let row = sqlx::query("UPDATE merchants SET webhook_url = ? WHERE id = ? RETURNING *")
            .bind(url)
            .bind(id.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::classify("merchant"))?;
        merchant_row(&row)
    }

    async fn merchants(&self) -> Result<Vec<MerchantRow>, StoreError> {
        sqlx::query("SELECT * FROM merchants ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::Database)?
            .iter()
            .map(merchant_row)
            .collect()
    }

    async fn insert_api_key(&self, key: NewApiKey) -> Result<ApiKeyRow, StoreError> {
        self.merchant(&key.merchant_id).await?;
        sqlx::query(
            "INSERT INTO api_keys (id, merchant_id, label, secret_hash, created_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(key.merchant_id.as_str())
        .bind(&key.label)
        .bind(&key.secret_hash)
        .bind(key.created_at)
        .execute(&self.pool)
        .await
        .map_err(StoreError::classify("api key"))?;
        Ok(key.into())
    }

    async fn api_key(&self, id: &str) -> Result<ApiKeyRow, StoreError> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::classify("api key"))?;
        api_key_row(&row)
    }

    async fn api_keys(&self, merchant: Option<&MerchantId>) -> Result<Vec<ApiKeyRow>, StoreError> {
        sqlx::query(
            "SELECT * FROM api_keys WHERE ?1 IS NULL OR merchant_id = ?1 ORDER BY created_at, id",
        )
        .bind(merchant.map(MerchantId::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::Database)?
        .iter()
        .map(api_key_row)
        .collect()
    }

    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<ApiKeyRow, StoreError> {
        let row = sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING *",
        )
        .bind(at)
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::classify("api key"))?;
        api_key_row(&row)
    }
}

/// The payment ledger on this backend; the SQL is shared with the other backend.
mod ledger {
    type Db = sqlx::Sqlite;
    type DbPool = sqlx::SqlitePool;
    type DbRow = sqlx::sqlite::SqliteRow;
    type ThisStore = super::SqliteStore;

    const CLAIM_DELIVERIES: &str = "UPDATE webhook_deliveries SET locked_until_ms = $1
        WHERE id IN (SELECT id FROM webhook_deliveries
                     WHERE status = 'pending' AND next_attempt_at_ms <= $2 AND locked_until_ms <= $2
                     ORDER BY next_attempt_at_ms, id LIMIT $3)
        RETURNING delivery_id";

    include!("orders_sql.rs");
}
