//! Fresh databases for tests: a new SQLite file or a new PostgreSQL database per call.
//!
//! PostgreSQL is reached through `COFFER_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each call creates a uniquely named database
//! `coffer_test_<pid>_<n>_<micros>` on that server. `Drop` cannot be async, so they are not
//! dropped by the test; `scripts/test.sh` drops every `coffer_test_*` database before a run.
//!
//! Each database gets its own random master key ([`TestDatabase::master_key`]), so secrets are
//! stored encrypted in tests exactly as in production; [`TestDatabase::reopen`] opens a second
//! store over the same database with that key.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

use crate::{MasterKey, Sealer, Store, StoreError};

/// Which backend a test wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A new database on the test PostgreSQL server.
    Postgres,
}

/// A fresh, migrated store and what keeps it alive.
pub struct TestDatabase {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The URL it was opened with.
    pub url: String,
    /// The master key its secrets are sealed with (random per database).
    pub master_key: MasterKey,
    _dir: Option<tempfile::TempDir>,
}

/// The admin URL of the test PostgreSQL server.
pub fn postgres_admin_url() -> String {
    std::env::var("COFFER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A URL for a fresh, empty database of `backend` (not yet opened or migrated).
///
/// # Errors
/// [`StoreError::Database`] when PostgreSQL cannot be reached or the database not created.
pub async fn fresh_url(
    backend: Backend,
) -> Result<(String, Option<tempfile::TempDir>), StoreError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = format!(
        "{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros()
    );
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
            let url = format!("sqlite://{}/coffer.db", dir.path().display());
            Ok((url, Some(dir)))
        }
        Backend::Postgres => {
            let admin = postgres_admin_url();
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .map_err(StoreError::Database)?;
            let name = format!("coffer_test_{unique}");
            sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .map_err(StoreError::Database)?;
            let base = admin
                .rsplit_once('/')
                .map_or(admin.as_str(), |(base, _)| base);
            Ok((format!("{base}/{name}"), None))
        }
    }
}

impl TestDatabase {
    /// Creates and migrates a fresh database.
    ///
    /// # Errors
    /// As [`fresh_url`] and [`crate::open`].
    pub async fn new(backend: Backend) -> Result<Self, StoreError> {
        let (url, dir) = fresh_url(backend).await?;
        let (master_key, _) = MasterKey::generate();
        let store = crate::open(&url, Sealer::new(master_key.clone())).await?;
        Ok(TestDatabase {
            store,
            url,
            master_key,
            _dir: dir,
        })
    }

    /// A fresh database migrated only up to migration `version`, to test a later migration on
    /// rows written as an older Coffer wrote them; [`TestDatabase::reopen`] applies the rest.
    ///
    /// # Errors
    /// As [`fresh_url`] and [`crate::open`].
    pub async fn migrated_to(backend: Backend, version: i64) -> Result<Self, StoreError> {
        let (url, dir) = fresh_url(backend).await?;
        let (master_key, _) = MasterKey::generate();
        let sealer = Sealer::new(master_key.clone());
        let store: Arc<dyn Store> = match backend {
            Backend::Sqlite => {
                Arc::new(crate::sqlite::SqliteStore::open_migrated_to(&url, sealer, version).await?)
            }
            Backend::Postgres => Arc::new(
                crate::postgres::PostgresStore::open_migrated_to(&url, sealer, version).await?,
            ),
        };
        Ok(TestDatabase {
            store,
            url,
            master_key,
            _dir: dir,
        })
    }

    /// Another store over the same database, with the same master key (as a second replica,
    /// or the process after a restart, would open it).
    ///
    /// # Errors
    /// As [`crate::open`].
    pub async fn reopen(&self) -> Result<std::sync::Arc<dyn Store>, StoreError> {
        crate::open(&self.url, Sealer::new(self.master_key.clone())).await
    }
}
