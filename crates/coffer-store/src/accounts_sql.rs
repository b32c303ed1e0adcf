// Merchants and API keys, compiled once per backend (see `crate::shared_sql`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use coffer_core::MerchantId;
use sqlx::Row;

use crate::fetch;
use crate::rows::merchant_id;
use crate::secrets::{MERCHANT_WEBHOOK_SECRET, Sealer};
use crate::{ApiKeyRow, Constraint, MerchantRow, NewApiKey, NewMerchant, StoreError};

/// A stored merchant, its webhook secret opened.
fn merchant_row(sealer: &Sealer, row: &DbRow) -> Result<MerchantRow, StoreError> {
    let read = StoreError::classify("merchant");
    let id = merchant_id(row.try_get("id").map_err(&read)?)?;
    let sealed: String = row.try_get("webhook_secret").map_err(&read)?;
    Ok(MerchantRow {
        webhook_secret: sealer.open(MERCHANT_WEBHOOK_SECRET, id.as_str(), &sealed)?,
        id,
        name: row.try_get("name").map_err(&read)?,
        webhook_url: row.try_get("webhook_url").map_err(&read)?,
        created_at: row.try_get("created_at").map_err(&read)?,
    })
}

fn api_key_row(row: &DbRow) -> Result<ApiKeyRow, StoreError> {
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
impl crate::Store for ThisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(StoreError::Database)
    }

    async fn insert_merchant(&self, merchant: NewMerchant) -> Result<MerchantRow, StoreError> {
        let sealed = self.sealer.seal(MERCHANT_WEBHOOK_SECRET, merchant.id.as_str(), &merchant.webhook_secret)?;
        sqlx::query(
            "INSERT INTO merchants (id, name, webhook_url, webhook_secret, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(merchant.id.as_str())
        .bind(&merchant.name)
        .bind(&merchant.webhook_url)
        .bind(&sealed)
        .bind(merchant.created_at)
        .execute(&self.pool)
        .await
        .map_err(StoreError::unique(Constraint::Merchant))?;
        Ok(merchant.into())
    }

    async fn merchant(&self, id: &MerchantId) -> Result<MerchantRow, StoreError> {
        let row = sqlx::query("SELECT * FROM merchants WHERE id = $1")
            .bind(id.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::classify("merchant"))?;
        merchant_row(&self.sealer, &row)
    }

    async fn set_merchant_webhook_url(
        &self,
        id: &MerchantId,
        url: Option<&str>,
    ) -> Result<MerchantRow, StoreError> {
        let row = sqlx::query("UPDATE merchants SET webhook_url = $1 WHERE id = $2 RETURNING *")
            .bind(url)
            .bind(id.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::classify("merchant"))?;
        merchant_row(&self.sealer, &row)
    }

    async fn merchants(&self) -> Result<Vec<MerchantRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM merchants ORDER BY created_at, id");
        fetch::all(&self.pool, query, |row| merchant_row(&self.sealer, row)).await
    }

    async fn insert_api_key(&self, key: NewApiKey) -> Result<ApiKeyRow, StoreError> {
        self.merchant(&key.merchant_id).await?;
        sqlx::query(
            "INSERT INTO api_keys (id, merchant_id, label, secret_hash, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.id)
        .bind(key.merchant_id.as_str())
        .bind(&key.label)
        .bind(&key.secret_hash)
        .bind(key.created_at)
        .execute(&self.pool)
        .await
        .map_err(StoreError::unique(Constraint::ApiKey))?;
        Ok(key.into())
    }

    async fn api_key(&self, id: &str) -> Result<ApiKeyRow, StoreError> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::classify("api key"))?;
        api_key_row(&row)
    }

    async fn api_key_with_merchant(&self, id: &str) -> Result<(ApiKeyRow, MerchantRow), StoreError> {
        let row = sqlx::query(
            "SELECT k.id AS key_id, k.merchant_id, k.label, k.secret_hash, k.created_at AS key_created_at,
                    k.revoked_at, m.id, m.name, m.webhook_url, m.webhook_secret, m.created_at
             FROM api_keys k JOIN merchants m ON m.id = k.merchant_id
             WHERE k.id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::classify("api key"))?;
        let read = StoreError::classify("api key");
        let key = ApiKeyRow {
            id: row.try_get("key_id").map_err(&read)?,
            merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
            label: row.try_get("label").map_err(&read)?,
            secret_hash: row.try_get("secret_hash").map_err(&read)?,
            created_at: row.try_get("key_created_at").map_err(&read)?,
            revoked_at: row.try_get("revoked_at").map_err(&read)?,
        };
        Ok((key, merchant_row(&self.sealer, &row)?))
    }

    async fn api_keys(&self, merchant: Option<&MerchantId>) -> Result<Vec<ApiKeyRow>, StoreError> {
        let query = sqlx::query(
            "SELECT * FROM api_keys WHERE CAST($1 AS TEXT) IS NULL OR merchant_id = $1 ORDER BY created_at, id",
        )
        .bind(merchant.map(MerchantId::as_str));
        fetch::all(&self.pool, query, api_key_row).await
    }

    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<ApiKeyRow, StoreError> {
        let row = sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING *",
        )
        .bind(at)
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::classify("api key"))?;
        api_key_row(&row)
    }
}
