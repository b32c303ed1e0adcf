//! The SQLite backend: one file, WAL journal, foreign keys on, one connection that queues
//! every statement (SQLite writes one at a time anyway).

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::StoreError;
use crate::migrate::{self, Migration};
use crate::order_writer::OrderWriter;
use crate::secrets::Sealer;

const MIGRATIONS: &[Migration] = crate::migrate::migrations!("sqlite");

/// The table recording which migrations were applied.
const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS coffer_migrations (
    version INTEGER PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL)";

/// The write-ahead log size (in pages) at which the committing connection copies it into the
/// database file. SQLite's default of 1,000 makes every such commit stall for tens of
/// milliseconds on a busy gateway (each order touches a dozen B-tree pages, all logged in full),
/// and every request queued behind it waits; smaller, more frequent checkpoints keep each
/// stall to a few milliseconds (`scripts/bench.sh`: at 1,000 orders/s, p99 fell from 21–30 ms
/// to 8–12 ms).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 256;

/// A store in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    orders: OrderWriter,
    sealer: Sealer,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at a `sqlite:` URL and migrates it.
    ///
    /// Secrets are sealed and opened with `sealer`'s key; see [`crate::open`].
    ///
    /// # Errors
    /// [`StoreError::Database`] when the file cannot be opened, [`StoreError::Migration`] when
    /// a migration fails, [`StoreError::Secret`] when a plain-text secret cannot be sealed.
    pub async fn open(url: &str, sealer: Sealer) -> Result<Self, StoreError> {
        Self::open_migrated_to(url, sealer, i64::MAX).await
    }

    /// A pool over the database file at the `sqlite:` URL `url` (created if missing).
    async fn connect(url: &str) -> Result<DbPool, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::Database)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        SqlitePoolOptions::new()
            // One connection: SQLite has one writer at a time, and a queue in the pool beats
            // writers sleeping on the busy handler (long tails under load). Reads are fast
            // enough to share it; scale out with PostgreSQL.
            .max_connections(1)
            .connect_with(
                options.pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string()),
            )
            .await
            .map_err(StoreError::Database)
    }

    /// Applies the pending migrations up to version `last`.
    async fn migrate(&self, last: i64) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::Database)?;
        migrate::apply::<sqlx::Sqlite>(&mut conn, CREATE_MIGRATIONS_TABLE, MIGRATIONS, last).await
    }
}

// The SQL shared with the other backend, compiled with this backend's types and the
// statements that differ here (see `crate::shared_sql`).

type Db = sqlx::Sqlite;
type ThisStore = SqliteStore;

const BACKEND: &str = "sqlite";

/// Whether an order and its event are written by one statement: not here, as SQLite has no
/// data-modifying CTEs (and its transactions are in-process and cheap).
const ORDER_AND_EVENT_IN_ONE_STATEMENT: bool = false;

/// Takes the database's write lock before a redelivery is counted: SQLite has no row locks,
/// and a no-op write as a transaction's first statement makes concurrent ones wait.
const LOCK_EVENT_FOR_REDELIVERY: &str = "UPDATE events SET event_id = event_id WHERE event_id = $1";

/// Claims the deliveries due, oldest first (the one connection makes claims one at a time).
const CLAIM_DELIVERIES: &str = "UPDATE webhook_deliveries SET locked_until_ms = $1
    WHERE id IN (SELECT id FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at_ms <= $2 AND locked_until_ms <= $2
                 ORDER BY next_attempt_at_ms, id LIMIT $3)
    RETURNING delivery_id";

/// A refund's transaction takes the write lock at once, so another process's refund of the
/// same order waits instead of deciding on what it read before.
const BEGIN_REFUND: &str = "BEGIN IMMEDIATE";

/// The refunded order (the transaction already holds the write lock).
const LOCK_REFUNDED_ORDER: &str = "SELECT p.status, p.amount_paid FROM gatepay_orders g
    JOIN payment_orders p ON p.order_id = g.order_id
    WHERE g.merchant_id = $1 AND g.prepay_id = $2";

/// SQLite has one writer at a time: the transaction itself keeps other writers out.
const LOCK_SECRET_TABLES: Option<&str> = None;

crate::shared_sql::compile!();
