//! Merchants and their API keys.
//!
//! An API key looks like `ck_<id>_<secret>`. Only its SHA-256 is stored; the key itself is
//! returned once, at creation. Authentication looks the key up by its id and compares hashes
//! in constant time, so neither timing nor the database reveals a key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use coffer_core::MerchantId;
use coffer_store::{ApiKeyRow, MerchantRow, NewApiKey, NewMerchant, Store, StoreError};
use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::outbound::{OutboundPolicy, UrlRefusal};

const KEY_PREFIX: &str = "ck_";
const KEY_ID_LEN: usize = 12;
const KEY_SECRET_LEN: usize = 40;

/// Why a merchant operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    /// The presented API key is malformed or unknown.
    #[error("invalid API key")]
    InvalidKey,
    /// The presented API key was revoked.
    #[error("API key has been revoked")]
    RevokedKey,
    /// Input was rejected.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A URL Coffer would call later is malformed or goes where the outbound policy forbids.
    #[error("{field}: {refusal}")]
    UrlNotAllowed {
        /// The field.
        field: &'static str,
        /// Why.
        refusal: UrlRefusal,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A newly created merchant, with its webhook secret shown this once.
#[derive(Debug)]
pub struct CreatedMerchant {
    /// The stored merchant.
    pub merchant: MerchantRow,
}

/// A newly created API key: the row and the key itself, which is never stored.
pub struct CreatedKey {
    /// The stored row.
    pub row: ApiKeyRow,
    /// The key to hand to the merchant, once.
    pub key: SecretString,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("row", &self.row)
            .field("key", &"***")
            .finish()
    }
}

/// The merchant service.
#[derive(Clone)]
pub struct Merchants {
    store: Arc<dyn Store>,
    /// Judges the webhook URLs merchants set.
    outbound: Arc<OutboundPolicy>,
    /// Recently verified keys. Only successes are
    /// kept, for [`KEY_CACHE_TTL`], so a key revoked by another process stops working within
    /// that time (at once when revoked through this one).
    verified: Arc<std::sync::Mutex<VerifiedKeys>>,
    /// The clock the cache's age is read from.
    clock: crate::clock::Clock,
}

/// Key id → (secret hash, merchant, when read in unix ms).
type VerifiedKeys = HashMap<String, (Vec<u8>, MerchantRow, i64)>;

/// How long a verified API key is trusted without reading the database again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn random_lowercase(len: usize) -> String {
    random_alphanumeric(len).to_ascii_lowercase()
}

fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

impl Merchants {
    /// A service over `store`; webhook URLs must pass the strict outbound policy.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Merchants {
            store,
            outbound: Arc::new(OutboundPolicy::strict()),
            verified: Arc::default(),
            clock: crate::clock::Clock::system(),
        }
    }

    /// The same service, timing its key cache by `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether a key read at `read_at_ms` may still be trusted without reading it again.
    fn fresh(&self, read_at_ms: i64) -> bool {
        let ttl = i64::try_from(KEY_CACHE_TTL.as_millis()).unwrap_or(i64::MAX);
        self.clock.now_ms().saturating_sub(read_at_ms) < ttl
    }

    /// The same service, judging webhook URLs with `policy`.
    #[must_use]
    pub fn with_outbound_policy(mut self, policy: Arc<OutboundPolicy>) -> Self {
        self.outbound = policy;
        self
    }

    /// Creates a merchant with a fresh webhook secret.
    ///
    /// # Errors
    /// [`MerchantError::Invalid`] for an empty name; [`MerchantError::UrlNotAllowed`] for a
    /// webhook URL that is malformed, not http(s), or goes where the outbound policy forbids
    /// (loopback, private networks, …); [`MerchantError::Store`] on storage failure.
    #[tracing::instrument(skip_all)]
    pub async fn create(
        &self,
        name: &str,
        webhook_url: Option<&str>,
    ) -> Result<MerchantRow, MerchantError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(MerchantError::Invalid {
                field: "name",
                reason: "must be 1 to 200 characters".to_owned(),
            });
        }
        if let Some(url) = webhook_url {
            self.outbound
                .check_url(url)
                .await
                .map_err(|refusal| MerchantError::UrlNotAllowed {
                    field: "webhook_url",
                    refusal,
                })?;
        }
        let id = MerchantId::from_suffix(&random_lowercase(16)).map_err(|error| {
            MerchantError::Invalid {
                field: "id",
                reason: error.to_string(),
            }
        })?;
        let merchant = NewMerchant {
            id,
            name: name.to_owned(),
            webhook_url: webhook_url.map(str::to_owned),
            webhook_secret: format!("whsec_{}", random_alphanumeric(32)),
            created_at: Utc::now(),
        };
        Ok(self.store.insert_merchant(merchant).await?)
    }

    /// Lists merchants.
    ///
    /// # Errors
    /// [`MerchantError::Store`] on storage failure.
    pub async fn list(&self) -> Result<Vec<MerchantRow>, MerchantError> {
        Ok(self.store.merchants().await?)
    }

    /// Reads a merchant.
    ///
    /// # Errors
    /// [`MerchantError::Store`] with `NotFound` when there is none.
    pub async fn get(&self, id: &MerchantId) -> Result<MerchantRow, MerchantError> {
        Ok(self.store.merchant(id).await?)
    }

    /// Creates an API key for a merchant and returns it, this once.
    ///
    /// # Errors
    /// [`MerchantError::Store`] with `NotFound` for an unknown merchant.
    pub async fn create_key(
        &self,
        merchant: &MerchantId,
        label: &str,
    ) -> Result<CreatedKey, MerchantError> {
        let id = format!("{KEY_PREFIX}{}", random_lowercase(KEY_ID_LEN));
        let key = format!("{id}_{}", random_alphanumeric(KEY_SECRET_LEN));
        let row = self
            .store
            .insert_api_key(NewApiKey {
                id,
                merchant_id: merchant.clone(),
                label: label.trim().to_owned(),
                secret_hash: hash_key(&key),
                created_at: Utc::now(),
            })
            .await?;
        Ok(CreatedKey {
            row,
            key: SecretString::from(key),
        })
    }

    /// Lists API keys (never the keys themselves).
    ///
    /// # Errors
    /// [`MerchantError::Store`] on storage failure.
    pub async fn keys(
        &self,
        merchant: Option<&MerchantId>,
    ) -> Result<Vec<ApiKeyRow>, MerchantError> {
        Ok(self.store.api_keys(merchant).await?)
    }

    /// Revokes an API key by id; it stops working at once.
    ///
    /// # Errors
    /// [`MerchantError::Store`] with `NotFound` for an unknown key.
    pub async fn revoke_key(&self, id: &str) -> Result<ApiKeyRow, MerchantError> {
        let revoked = self.store.revoke_api_key(id, Utc::now()).await?;
        self.verified_keys().remove(id);
        Ok(revoked)
    }

    fn verified_keys(&self) -> std::sync::MutexGuard<'_, VerifiedKeys> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves a presented API key to its merchant.
    ///
    /// # Errors
    /// [`MerchantError::InvalidKey`] for a malformed or unknown key or a wrong secret,
    /// [`MerchantError::RevokedKey`] for a revoked one, [`MerchantError::Store`] when the
    /// database fails.
    pub async fn authenticate(
        &self,
        presented: &SecretString,
    ) -> Result<MerchantRow, MerchantError> {
        let presented = presented.expose_secret();
        let id = key_id(presented).ok_or(MerchantError::InvalidKey)?;
        let presented_hash = hash_key(presented);
        if let Some((hash, merchant, read_at)) = self.verified_keys().get(id)
            && self.fresh(*read_at)
            && bool::from(presented_hash.ct_eq(hash))
        {
            return Ok(merchant.clone());
        }
        let (row, merchant) = match self.store.api_key_with_merchant(id).await {
            Ok(found) => found,
            Err(StoreError::NotFound(_)) => return Err(MerchantError::InvalidKey),
            Err(error) => return Err(error.into()),
        };
        if !bool::from(presented_hash.ct_eq(&row.secret_hash)) {
            return Err(MerchantError::InvalidKey);
        }
        if row.revoked_at.is_some() {
            return Err(MerchantError::RevokedKey);
        }
        let now_ms = self.clock.now_ms();
        let mut verified = self.verified_keys();
        verified.retain(|_, (_, _, read_at)| self.fresh(*read_at));
        verified.insert(
            id.to_owned(),
            (row.secret_hash.clone(), merchant.clone(), now_ms),
        );
        Ok(merchant)
    }
}

/// The id part (`ck_<id>`) of a well-formed key.
fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_at_checked(KEY_ID_LEN)?;
    let secret = secret.strip_prefix('_')?;
    let well_formed = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && secret.len() == KEY_SECRET_LEN
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    well_formed.then(|| &key[..KEY_PREFIX.len() + KEY_ID_LEN])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_come_only_from_well_formed_keys() {
        let secret = "A".repeat(KEY_SECRET_LEN);
        assert_eq!(
            key_id(&format!("ck_abcdef012345_{secret}")),
            Some("ck_abcdef012345")
        );
        for bad in [
            String::new(),
            "ck_".to_owned(),
            format!("ck_abcdef01234_{secret}"),
            format!("ck_ABCDEF012345_{secret}"),
            format!("ck_abcdef012345_{secret}x"),
            format!("ck_abcdef012345-{secret}"),
            format!("sk_abcdef012345_{secret}"),
            format!("ck_abcdéf01234_{secret}"),
        ] {
            assert_eq!(key_id(&bad), None, "{bad}");
        }
    }
}
