//! The database as the commands see it: opened from the configuration, addressed by
//! `--merchant`, its errors told in the terms of the command line.

use std::sync::Arc;

use coffer_core::MerchantId;
use coffer_store::{Store, StoreError};

use crate::config::Config;
use crate::failure::Failure;

/// Opens the configured database with the configured master key (or none). With no database
/// configured, the default `coffer.db` in the current folder must exist already: a command run
/// from the wrong folder must not quietly make an empty one. A configured SQLite file is
/// created when missing, as `serve` does.
///
/// # Errors
/// [`Failure`] naming the missing default file and how to point at the right one, or as
/// [`open_or_create_store`].
pub(crate) async fn open_store(config: &Config) -> Result<Arc<dyn Store>, Failure> {
    let default = crate::config::DatabaseConfig::default().url;
    if config.database.url == default
        && let Some(file) = coffer_store::sqlite_file(&config.database.url)
        && !file.exists()
    {
        let shown = std::path::absolute(&file).unwrap_or(file);
        return Err(Failure::new(format!(
            "no database at {} (database.url is not configured, so it is {} in the current folder): run this where Coffer's database is, set COFFER__DATABASE__URL to it (coffer dev prints the line), or create it here with coffer migrate",
            shown.display(),
            coffer_store::redact_url(&config.database.url)
        )));
    }
    open_or_create_store(config).await
}

/// Opens the configured database with the configured master key (or none), creating a SQLite
/// file that does not exist yet, and migrates it.
///
/// # Errors
/// [`Failure`] naming the database (password removed) or the key.
pub(crate) async fn open_or_create_store(config: &Config) -> Result<Arc<dyn Store>, Failure> {
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
