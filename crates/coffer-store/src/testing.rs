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

/// Runs each named test on both backends: expands to `mod sqlite` and `mod postgres`, each
/// holding one test per name that calls the `async fn` of that name in the invoking module.
///
/// What a test function takes depends on the list that names it:
/// - `backend: [..]`: the [`Backend`] (the test makes its own databases);
/// - `threaded_backend: [..]`: the [`Backend`], on a multi-threaded runtime (for tests whose
///   tasks must really run at once);
/// - `store: [..]`: `&dyn Store`, a fresh migrated store;
/// - `shared_store: [..]`: `Arc<dyn Store>`, a fresh store to share between tasks, on a
///   multi-threaded runtime;
/// - `blocking: [..]`: the [`Backend`], from a plain `#[test]` (the function is not `async`:
///   for tests that drive a runtime of their own).
///
/// The lists are optional and come in that order, each ending with `;`. A bare list of names
/// is a `backend` list. The invoking crate depends on `tokio` (for `#[tokio::test]`).
///
/// ```no_run
/// use coffer_store::Store;
/// use coffer_store::testing::{Backend, TestDatabase};
///
/// async fn merchants_start_empty(store: &dyn Store) {
///     assert!(store.merchants().await.unwrap().is_empty());
/// }
///
/// async fn a_database_opens_twice(backend: Backend) {
///     let db = TestDatabase::new(backend).await.unwrap();
///     db.reopen().await.unwrap();
/// }
///
/// coffer_store::on_both_databases! {
///     backend: [a_database_opens_twice];
///     store: [merchants_start_empty];
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! on_both_databases {
    (@on $backend:ident
        backend: [$($backend_test:ident),*]
        threaded_backend: [$($threaded_test:ident),*]
        store: [$($store_test:ident),*]
        shared_store: [$($shared_test:ident),*]
        blocking: [$($blocking_test:ident),*]
    ) => {
        $(
            #[tokio::test]
            async fn $backend_test() {
                super::$backend_test($crate::testing::Backend::$backend).await;
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $threaded_test() {
                super::$threaded_test($crate::testing::Backend::$backend).await;
            }
        )*
        $(
            #[tokio::test]
            async fn $store_test() {
                let db = $crate::on_both_databases!(@fresh $backend);
                super::$store_test(&*db.store).await;
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $shared_test() {
                let db = $crate::on_both_databases!(@fresh $backend);
                super::$shared_test(::std::sync::Arc::clone(&db.store)).await;
            }
        )*
        $(
            #[test]
            fn $blocking_test() {
                super::$blocking_test($crate::testing::Backend::$backend);
            }
        )*
    };
    (@fresh $backend:ident) => {
        $crate::testing::TestDatabase::new($crate::testing::Backend::$backend)
            .await
            .unwrap_or_else(|error| panic!("fresh {} database: {error}", stringify!($backend)))
    };
    (
        $(backend: [$($backend_test:ident),* $(,)?];)?
        $(threaded_backend: [$($threaded_test:ident),* $(,)?];)?
        $(store: [$($store_test:ident),* $(,)?];)?
        $(shared_store: [$($shared_test:ident),* $(,)?];)?
        $(blocking: [$($blocking_test:ident),* $(,)?];)?
    ) => {
        mod sqlite {
            $crate::on_both_databases!(@on Sqlite
                backend: [$($($backend_test),*)?]
                threaded_backend: [$($($threaded_test),*)?]
                store: [$($($store_test),*)?]
                shared_store: [$($($shared_test),*)?]
                blocking: [$($($blocking_test),*)?]
            );
        }
        mod postgres {
            $crate::on_both_databases!(@on Postgres
                backend: [$($($backend_test),*)?]
                threaded_backend: [$($($threaded_test),*)?]
                store: [$($($store_test),*)?]
                shared_store: [$($($shared_test),*)?]
                blocking: [$($($blocking_test),*)?]
            );
        }
    };
    ($($test:ident),+ $(,)?) => {
        $crate::on_both_databases! {
            backend: [$($test),+];
        }
    };
}
