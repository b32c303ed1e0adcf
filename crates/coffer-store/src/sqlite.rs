//! The SQLite backend: one file, WAL journal, foreign keys on, one connection that queues
//! every statement (SQLite writes one at a time anyway).

use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::StoreError;
use crate::migrate::{Migration, pending};
use crate::order_writer::OrderWriter;
use crate::secrets::Sealer;

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "merchants_and_api_keys",
        sql: include_str!("../migrations/sqlite/0001_merchants_and_api_keys.sql"),
    },
    Migration {
        version: 2,
        name: "payment_orders",
        sql: include_str!("../migrations/sqlite/0002_payment_orders.sql"),
    },
    Migration {
        version: 3,
        name: "settlements",
        sql: include_str!("../migrations/sqlite/0003_settlements.sql"),
    },
    Migration {
        version: 4,
        name: "gatepay",
        sql: include_str!("../migrations/sqlite/0004_gatepay.sql"),
    },
    Migration {
        version: 5,
        name: "x402_sales",
        sql: include_str!("../migrations/sqlite/0005_x402_sales.sql"),
    },
    Migration {
        version: 6,
        name: "settlement_transactions",
        sql: include_str!("../migrations/sqlite/0006_settlement_transactions.sql"),
    },
    Migration {
        version: 7,
        name: "settlement_terms",
        sql: include_str!("../migrations/sqlite/0007_settlement_terms.sql"),
    },
    Migration {
        version: 8,
        name: "gatepay_order_facts",
        sql: include_str!("../migrations/sqlite/0008_gatepay_order_facts.sql"),
    },
    Migration {
        version: 9,
        name: "payment_claims",
        sql: include_str!("../migrations/sqlite/0009_payment_claims.sql"),
    },
];

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

    /// Opens the database at `url` and applies the migrations up to version `last` only (tests
    /// of a migration write rows the way an older Coffer did, then reopen with [`Self::open`]).
    /// Plain-text secrets are sealed only when every migration is applied.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub(crate) async fn open_migrated_to(
        url: &str,
        sealer: Sealer,
        last: i64,
    ) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::Database)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            // One connection: SQLite has one writer at a time, and a queue in the pool beats
            // writers sleeping on the busy handler (long tails under load). Reads are fast
            // enough to share it; scale out with PostgreSQL.
            .max_connections(1)
            .connect_with(
                options.pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string()),
            )
            .await
            .map_err(StoreError::Database)?;
        let store = SqliteStore {
            pool,
            orders: OrderWriter::default(),
            sealer,
        };
        store.migrate(last).await?;
        if last == i64::MAX {
            store.seal_plain_secrets().await?;
        }
        Ok(store)
    }

    /// Applies the pending migrations up to version `last`.
    async fn migrate(&self, last: i64) -> Result<(), StoreError> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS coffer_migrations (
                version INTEGER PRIMARY KEY NOT NULL,
                name TEXT NOT NULL,
                applied_at TEXT NOT NULL)",
        )
        .execute(&self.pool)
        .await
        .map_err(StoreError::Database)?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM coffer_migrations")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        for migration in pending(MIGRATIONS, &applied).filter(|m| m.version <= last) {
            let failed = |source| StoreError::Migration {
                version: migration.version,
                source,
            };
            let mut tx = self.pool.begin().await.map_err(failed)?;
            sqlx::raw_sql(migration.sql)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::query(
                "INSERT INTO coffer_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            )
            .bind(migration.version)
            .bind(migration.name)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied migration"
            );
        }
        Ok(())
    }
}

/// Merchants and API keys on this backend; the SQL is shared with the other backend.
mod accounts {
    type DbRow = sqlx::sqlite::SqliteRow;
    type ThisStore = super::SqliteStore;

    const BACKEND: &str = "sqlite";

    include!("accounts_sql.rs");
}

/// The payment ledger on this backend; the SQL is shared with the other backend.
mod ledger {
    type Db = sqlx::Sqlite;
    type DbPool = sqlx::SqlitePool;
    type DbRow = sqlx::sqlite::SqliteRow;
    type ThisStore = super::SqliteStore;

    /// Whether an order and its event are written by one statement. SQLite has no data-modifying CTEs; its transactions are in-process and cheap.
    const ORDER_AND_EVENT_IN_ONE_STATEMENT: bool = false;

    /// Takes the database's write lock before a redelivery is counted: SQLite has no row locks,
    /// and a no-op write as a transaction's first statement makes concurrent ones wait.
    const LOCK_EVENT_FOR_REDELIVERY: &str =
        "UPDATE events SET event_id = event_id WHERE event_id = $1";

    const CLAIM_DELIVERIES: &str = "UPDATE webhook_deliveries SET locked_until_ms = $1
        WHERE id IN (SELECT id FROM webhook_deliveries
                     WHERE status = 'pending' AND next_attempt_at_ms <= $2 AND locked_until_ms <= $2
                     ORDER BY next_attempt_at_ms, id LIMIT $3)
        RETURNING delivery_id";

    include!("orders_sql.rs");
    include!("sales_sql.rs");
}

/// The x402 settlement journal on this backend; the SQL is shared with the other backend.
mod journal {
    type DbPool = sqlx::SqlitePool;
    type DbRow = sqlx::sqlite::SqliteRow;
    type ThisStore = super::SqliteStore;

    include!("settlements_sql.rs");
}

/// OKX-style credentials on this backend; the SQL is shared with the other backend.
mod credentials {
    type DbRow = sqlx::sqlite::SqliteRow;
    type ThisStore = super::SqliteStore;

    include!("credentials_sql.rs");
}

/// GatePay credentials, nonces, orders, refunds and fiat quotes on this backend; the SQL is
/// shared with the other backend.
mod checkout {
    type DbRow = sqlx::sqlite::SqliteRow;
    type ThisStore = super::SqliteStore;

    /// A refund's transaction takes the write lock at once, so another process's refund of the
    /// same order waits instead of deciding on what it read before.
    const BEGIN_REFUND: &str = "BEGIN IMMEDIATE";
    /// The refunded order (the transaction already holds the write lock).
    const LOCK_REFUNDED_ORDER: &str = "SELECT p.status, p.amount_paid FROM gatepay_orders g
        JOIN payment_orders p ON p.order_id = g.order_id
        WHERE g.merchant_id = $1 AND g.prepay_id = $2";

    include!("checkout_sql.rs");
}

/// Claims on authorizations presented to paid routes on this backend; the SQL is shared with
/// the other backend.
mod payment_claims {
    type ThisStore = super::SqliteStore;

    include!("payment_claims_sql.rs");
}

/// The secret columns as a whole (census, rotation) on this backend; the SQL is shared with the
/// other backend.
mod secrets_storage {
    type DbRow = sqlx::sqlite::SqliteRow;
    type ThisStore = super::SqliteStore;

    /// SQLite has one writer at a time: the transaction itself keeps other writers out.
    const LOCK_SECRET_TABLES: Option<&str> = None;

    include!("secrets_sql.rs");
}
