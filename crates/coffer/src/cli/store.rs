//! The database as the commands see it: opened from the configuration, addressed by
//! `--merchant`, its errors told in the terms of the command line.

use std::sync::Arc;

use coffer_core::MerchantId;
use coffer_store::{Store, StoreError};

use crate::config::Config;
use crate::failure::Failure;

/// Opens the configured database with the configured master key (or none).
///
/// # Errors
/// [`Failure`] naming the database (password removed) or the key.
pub(crate) async fn open_store(config: &Config) -> Result<Arc<dyn Store>, Failure> {
    coffer_store::open(&config.database.url, config.secrets.sealer()?)
        .await
        .map_err(Failure::context(format!(
            "database {}",
            coffer_store::redact_url(&config.database.url)
        )))
}

/// Reads `--merchant`.
///
/// # Errors
/// [`Failure`] naming the flag when the text is not a merchant id.
pub(crate) fn parse_merchant(text: &str) -> Result<MerchantId, Failure> {
    MerchantId::parse(text).map_err(Failure::context("--merchant"))
}

/// Tells a store error as a failure, naming `--merchant` when the merchant does not exist.
pub(crate) fn merchant_not_found(merchant: &MerchantId) -> impl Fn(StoreError) -> Failure {
    move |error| match error {
        StoreError::NotFound(_) => Failure::new(format!("--merchant: no merchant {merchant}")),
        other => other.into(),
    }
}
