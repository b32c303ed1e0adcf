//! Coffer's persistence.
//!
//! Callers see one [`Store`] trait, row types ([`MerchantRow`], [`ApiKeyRow`]) and one error
//! type, [`StoreError`], already classified into not-found, conflict and the rest — nobody
//! outside this crate matches on a database driver's error.
//!
//! Two backends implement the trait, each with its own SQL and migrations:
//! - [`sqlite::SqliteStore`], the default: a single file, WAL mode, for one process.
//! - [`postgres::PostgresStore`], for several replicas sharing one database.
//!
//! [`open`] picks the backend from the URL scheme (`sqlite:` or `postgres:`/`postgresql:`);
//! any other scheme is an error, never a silent new SQLite file. Both backends run the same
//! conformance suite (`tests/conformance.rs`).
//!
//! Amounts are stored as canonical decimal text of base units (see `coffer_core::Amount`),
//! timestamps as UTC.

mod migrate;
pub mod postgres;
mod rows;
pub mod sqlite;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use coffer_core::MerchantId;

pub use rows::{ApiKeyRow, MerchantRow, NewApiKey, NewMerchant};

/// A storage failure, classified for callers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique constraint was violated: the row already exists.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The database URL is not one Coffer supports.
    #[error("unsupported database URL {url:?}: use sqlite:<path> or postgres://…")]
    UnsupportedUrl {
        /// The URL with any password removed.
        url: String,
    },
    /// A stored value could not be read back (a bug or a hand-edited row).
    #[error("corrupt {what} in the database: {detail}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The database could not be reached or failed; usually worth retrying.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A migration failed.
    #[error("migration {version} failed: {source}")]
    Migration {
        /// The migration's version.
        version: i64,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    /// Whether the same call may succeed if retried (connection trouble, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            )
        )
    }

    pub(crate) fn classify(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
        move |error| match &error {
            sqlx::Error::RowNotFound => StoreError::NotFound(what),
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::Database(error),
        }
    }
}

/// Everything Coffer persists.
///
/// Implementations keep every method atomic: a method either applies all its writes or none.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is (`"sqlite"` or `"postgres"`), for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Checks the database answers.
    ///
    /// # Errors
    /// [`StoreError::Database`] when it does not.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Inserts a merchant.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the id is taken.
    async fn insert_merchant(&self, merchant: NewMerchant) -> Result<MerchantRow, StoreError>;

    /// Reads one merchant.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is none with this id.
    async fn merchant(&self, id: &MerchantId) -> Result<MerchantRow, StoreError>;

    /// Lists merchants, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn merchants(&self) -> Result<Vec<MerchantRow>, StoreError>;

    /// Inserts an API key (its hash, never the key itself).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the id is taken; [`StoreError::NotFound`] when the
    /// merchant does not exist.
    async fn insert_api_key(&self, key: NewApiKey) -> Result<ApiKeyRow, StoreError>;

    /// Reads one API key by id, revoked or not.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is none.
    async fn api_key(&self, id: &str) -> Result<ApiKeyRow, StoreError>;

    /// Lists API keys, of one merchant or of all, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`] on failure.
    async fn api_keys(&self, merchant: Option<&MerchantId>) -> Result<Vec<ApiKeyRow>, StoreError>;

    /// Marks a key revoked at `at`; revoking a revoked key keeps the first time.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such key.
    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<ApiKeyRow, StoreError>;
}

/// Opens the store named by `url`, creating a SQLite file if needed, and runs migrations.
///
/// # Errors
/// [`StoreError::UnsupportedUrl`] for a scheme other than `sqlite:`, `postgres:` or
/// `postgresql:`; [`StoreError::Database`] when the database cannot be opened;
/// [`StoreError::Migration`] when a migration fails.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sqlite") => Ok(Arc::new(sqlite::SqliteStore::open(url).await?)),
        Some("postgres" | "postgresql") => Ok(Arc::new(postgres::PostgresStore::open(url).await?)),
        _ => Err(StoreError::UnsupportedUrl {
            url: redact_url(url),
        }),
    }
}

/// Removes a password from a database URL so it can be logged.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Setting a password only fails for URLs that cannot have one.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_scheme_is_an_error_not_a_new_sqlite_file() {
        for url in ["mysql://localhost/coffer", "coffer.db", "file:coffer.db"] {
            let error = open(url).await.err().map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("unsupported database URL")),
                "{url}: {error:?}"
            );
        }
    }

    #[test]
    fn passwords_never_appear_in_a_redacted_url() {
        let redacted = redact_url("postgres://coffer:hunter2@db:5432/coffer");
        assert_eq!(redacted, "postgres://coffer:***@db:5432/coffer");
    }
}
