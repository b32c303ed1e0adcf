//! Row types: exactly what a table holds, separate from wire and domain types.

use chrono::{DateTime, Utc};
use coffer_core::MerchantId;

/// A merchant to insert.
#[derive(Clone)]
pub struct NewMerchant {
    /// Public id.
    pub id: MerchantId,
    /// Display name.
    pub name: String,
    /// Default webhook endpoint.
    pub webhook_url: Option<String>,
    /// Secret for signing webhooks.
    pub webhook_secret: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A stored merchant.
#[derive(Clone, PartialEq, Eq)]
pub struct MerchantRow {
    /// Public id.
    pub id: MerchantId,
    /// Display name.
    pub name: String,
    /// Default webhook endpoint.
    pub webhook_url: Option<String>,
    /// Secret for signing webhooks.
    pub webhook_secret: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<NewMerchant> for MerchantRow {
    fn from(new: NewMerchant) -> Self {
        MerchantRow {
            id: new.id,
            name: new.name,
            webhook_url: new.webhook_url,
            webhook_secret: new.webhook_secret,
            created_at: new.created_at,
        }
    }
}

impl std::fmt::Debug for MerchantRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("webhook_url", &self.webhook_url)
            .field("webhook_secret", &"***")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// An API key to insert: its id and the hash of its secret.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Public id, also the key's lookup prefix.
    pub id: String,
    /// Owner.
    pub merchant_id: MerchantId,
    /// Free-form label.
    pub label: String,
    /// SHA-256 of the full key.
    pub secret_hash: Vec<u8>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A stored API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// Public id.
    pub id: String,
    /// Owner.
    pub merchant_id: MerchantId,
    /// Free-form label.
    pub label: String,
    /// SHA-256 of the full key.
    pub secret_hash: Vec<u8>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<NewApiKey> for ApiKeyRow {
    fn from(new: NewApiKey) -> Self {
        ApiKeyRow {
            id: new.id,
            merchant_id: new.merchant_id,
            label: new.label,
            secret_hash: new.secret_hash,
            created_at: new.created_at,
            revoked_at: None,
        }
    }
}

pub(crate) fn merchant_id(text: String) -> Result<MerchantId, crate::StoreError> {
    MerchantId::parse(&text).map_err(|error| crate::StoreError::Corrupt {
        what: "merchant id",
        detail: error.to_string(),
    })
}
