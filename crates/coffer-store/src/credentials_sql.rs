// OKX-style API credentials, compiled once per backend (see `crate::shared_sql`).

use coffer_core::MerchantId;
use sqlx::Row;

use crate::{Constraint, StoreError};
use crate::fetch;
use crate::rows::merchant_id;
use crate::secrets::{OKX_SECRET, PAYOUT_WALLET_KEY, Sealer};

/// A stored OKX-style credential, its secret opened.
fn credential_row(sealer: &Sealer, row: &DbRow) -> Result<crate::OkxCredentialRow, StoreError> {
    let read = StoreError::classify("OKX credential");
    let access_key: String = row.try_get("access_key").map_err(&read)?;
    let sealed: String = row.try_get("secret").map_err(&read)?;
    Ok(crate::OkxCredentialRow {
        secret: sealer.open(OKX_SECRET, &access_key, &sealed)?,
        access_key,
        merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
        passphrase_hash: row.try_get("passphrase_hash").map_err(&read)?,
        created_at_ms: row.try_get("created_at_ms").map_err(&read)?,
        revoked_at_ms: row.try_get("revoked_at_ms").map_err(&read)?,
    })
}

/// A stored payout wallet, its key opened.
fn payout_wallet_row(sealer: &Sealer, row: &DbRow) -> Result<crate::PayoutWalletRow, StoreError> {
    let read = StoreError::classify("payout wallet");
    let wallet_id: String = row.try_get("wallet_id").map_err(&read)?;
    let sealed: String = row.try_get("private_key").map_err(&read)?;
    let chain_id: i64 = row.try_get("chain_id").map_err(&read)?;
    Ok(crate::PayoutWalletRow {
        private_key: sealer.open(PAYOUT_WALLET_KEY, &wallet_id, &sealed)?,
        merchant_id: merchant_id(row.try_get("merchant_id").map_err(&read)?)?,
        chain_id: u64::try_from(chain_id).unwrap_or_default(),
        address: row.try_get("address").map_err(&read)?,
        created_at_ms: row.try_get("created_at_ms").map_err(&read)?,
    })
}

#[async_trait::async_trait]
impl crate::Credentials for ThisStore {
    async fn insert_payout_wallet(&self, wallet: &crate::PayoutWalletRow) -> Result<(), StoreError> {
        let wallet_id = wallet.wallet_id();
        let sealed = self.sealer.seal(PAYOUT_WALLET_KEY, &wallet_id, &wallet.private_key)?;
        sqlx::query(
            "INSERT INTO payout_wallets (wallet_id, merchant_id, chain_id, address, private_key, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&wallet_id)
        .bind(wallet.merchant_id.as_str())
        .bind(i64::try_from(wallet.chain_id).map_err(|_| StoreError::Corrupt { what: "chain id", detail: "exceeds 2^63".to_owned() })?)
        .bind(&wallet.address)
        .bind(&sealed)
        .bind(wallet.created_at_ms)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(StoreError::unique(Constraint::PayoutWallet))
    }

    async fn payout_wallets(&self, merchant: &MerchantId) -> Result<Vec<crate::PayoutWalletRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM payout_wallets WHERE merchant_id = $1 ORDER BY chain_id")
            .bind(merchant.as_str());
        fetch::all(&self.pool, query, |row| payout_wallet_row(&self.sealer, row)).await
    }

    async fn insert_okx_credential(&self, credential: &crate::OkxCredentialRow) -> Result<(), StoreError> {
        let sealed = self.sealer.seal(OKX_SECRET, &credential.access_key, &credential.secret)?;
        sqlx::query(
            "INSERT INTO okx_credentials (access_key, merchant_id, secret, passphrase_hash, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&credential.access_key)
        .bind(credential.merchant_id.as_str())
        .bind(&sealed)
        .bind(&credential.passphrase_hash)
        .bind(credential.created_at_ms)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(StoreError::unique(Constraint::OkxCredential))
    }

    async fn okx_credential(&self, access_key: &str) -> Result<Option<crate::OkxCredentialRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM okx_credentials WHERE access_key = $1")
            .bind(access_key);
        fetch::optional(&self.pool, query, |row| credential_row(&self.sealer, row)).await
    }

    async fn okx_credentials(&self, merchant: &MerchantId) -> Result<Vec<crate::OkxCredentialRow>, StoreError> {
        let query = sqlx::query("SELECT * FROM okx_credentials WHERE merchant_id = $1 ORDER BY created_at_ms")
            .bind(merchant.as_str());
        fetch::all(&self.pool, query, |row| credential_row(&self.sealer, row)).await
    }

    async fn revoke_okx_credential(&self, access_key: &str, now_ms: i64) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE okx_credentials SET revoked_at_ms = COALESCE(revoked_at_ms, $1) WHERE access_key = $2",
        )
        .bind(now_ms)
        .bind(access_key)
        .execute(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        if updated.rows_affected() == 1 { Ok(()) } else { Err(StoreError::NotFound("OKX credential")) }
    }
}
