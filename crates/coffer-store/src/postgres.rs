//! The PostgreSQL backend, for several Coffer replicas sharing one database.
//!
//! Migrations run under a session advisory lock so that replicas starting together apply each
//! migration once.

use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::StoreError;
use crate::migrate::{Migration, pending};
use crate::order_writer::OrderWriter;
use crate::secrets::Sealer;

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "merchants_and_api_keys",
        sql: include_str!("../migrations/postgres/0001_merchants_and_api_keys.sql"),
    },
    Migration {
        version: 2,
        name: "payment_orders",
        sql: include_str!("../migrations/postgres/0002_payment_orders.sql"),
    },
    Migration {
        version: 3,
        name: "settlements",
        sql: include_str!("../migrations/postgres/0003_settlements.sql"),
    },
    Migration {
        version: 4,
        name: "gatepay",
        sql: include_str!("../migrations/postgres/0004_gatepay.sql"),
    },
    Migration {
        version: 5,
        name: "x402_sales",
        sql: include_str!("../migrations/postgres/0005_x402_sales.sql"),
    },
    Migration {
        version: 6,
        name: "settlement_transactions",
        sql: include_str!("../migrations/postgres/0006_settlement_transactions.sql"),
    },
    Migration {
        version: 7,
        name: "settlement_terms",
        sql: include_str!("../migrations/postgres/0007_settlement_terms.sql"),
    },
    Migration {
        version: 8,
        name: "gatepay_order_facts",
        sql: include_str!("../migrations/postgres/0008_gatepay_order_facts.sql"),
    },
    Migration {
        version: 9,
        name: "payment_claims",
        sql: include_str!("../migrations/postgres/0009_payment_claims.sql"),
    },
];

/// Advisory-lock key that serialises migrations across replicas ("coffer" in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_6666_6572;

/// A store in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    orders: OrderWriter,
    sealer: Sealer,
}

impl PostgresStore {
    /// Connects to a `postgres://` URL and migrates the database.
    ///
    /// Secrets are sealed and opened with `sealer`'s key; see [`crate::open`].
    ///
    /// # Errors
    /// [`StoreError::Database`] when the server cannot be reached, [`StoreError::Migration`]
    /// when a migration fails, [`StoreError::Secret`] when a plain-text secret cannot be
    /// sealed.
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
        let options = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(StoreError::Database)?;
        let store = PostgresStore {
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
        let mut conn = self.pool.acquire().await.map_err(StoreError::Database)?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::Database)?;
        let result = async {
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS coffer_migrations (
                    version BIGINT PRIMARY KEY,
                    name TEXT NOT NULL,
                    applied_at TIMESTAMPTZ NOT NULL)",
            )
            .execute(&mut *conn)
            .await
            .map_err(StoreError::Database)?;
            let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM coffer_migrations")
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::Database)?;
            for migration in pending(MIGRATIONS, &applied).filter(|m| m.version <= last) {
                let failed = |source| StoreError::Migration {
                    version: migration.version,
                    source,
                };
                let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(failed)?;
                sqlx::raw_sql(migration.sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?;
                sqlx::query(
                    "INSERT INTO coffer_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
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
        .await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::Database);
        result.and(unlocked.map(drop))
    }
}

/// Merchants and API keys on this backend; the SQL is shared with the other backend.
mod accounts {
    type DbRow = sqlx::postgres::PgRow;
    type ThisStore = super::PostgresStore;

    const BACKEND: &str = "postgres";

    include!("accounts_sql.rs");
}

/// The payment ledger on this backend; the SQL is shared with the other backend.
mod ledger {
    type Db = sqlx::Postgres;
    type DbPool = sqlx::PgPool;
    type DbRow = sqlx::postgres::PgRow;
    type ThisStore = super::PostgresStore;

    /// Whether an order and its event are written by one statement. One round trip for an order and its event instead of four.
    const ORDER_AND_EVENT_IN_ONE_STATEMENT: bool = true;

    /// Locks the event's row before a redelivery is counted, so concurrent redeliveries of one
    /// event (from any replica) are counted one after the other.
    const LOCK_EVENT_FOR_REDELIVERY: &str =
        "SELECT event_id FROM events WHERE event_id = $1 FOR UPDATE";

    const CLAIM_DELIVERIES: &str = "UPDATE webhook_deliveries SET locked_until_ms = $1
        WHERE id IN (SELECT id FROM webhook_deliveries
                     WHERE status = 'pending' AND next_attempt_at_ms <= $2 AND locked_until_ms <= $2
                     ORDER BY next_attempt_at_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED)
        RETURNING delivery_id";

    include!("orders_sql.rs");
    include!("sales_sql.rs");
}

/// The x402 settlement journal on this backend; the SQL is shared with the other backend.
mod journal {
    type DbPool = sqlx::PgPool;
    type DbRow = sqlx::postgres::PgRow;
    type ThisStore = super::PostgresStore;

    include!("settlements_sql.rs");
}

/// OKX-style credentials on this backend; the SQL is shared with the other backend.
mod credentials {
    type DbRow = sqlx::postgres::PgRow;
    type ThisStore = super::PostgresStore;

    include!("credentials_sql.rs");
}

/// GatePay credentials, nonces, orders, refunds and fiat quotes on this backend; the SQL is
/// shared with the other backend.
mod checkout {
    type DbRow = sqlx::postgres::PgRow;
    type ThisStore = super::PostgresStore;

    /// A refund's transaction (read committed: each statement sees what committed before it).
    const BEGIN_REFUND: &str = "BEGIN";
    /// The refunded order, locked until the transaction ends: refunds of one order are decided
    /// one after the other, each seeing the ones before.
    const LOCK_REFUNDED_ORDER: &str = "SELECT p.status, p.amount_paid FROM gatepay_orders g
        JOIN payment_orders p ON p.order_id = g.order_id
        WHERE g.merchant_id = $1 AND g.prepay_id = $2
        FOR UPDATE";

    include!("checkout_sql.rs");
}

/// Claims on authorizations presented to paid routes on this backend; the SQL is shared with
/// the other backend.
mod payment_claims {
    type ThisStore = super::PostgresStore;

    include!("payment_claims_sql.rs");
}

/// The secret columns as a whole (census, rotation) on this backend; the SQL is shared with the
/// other backend.
mod secrets_storage {
    type DbRow = sqlx::postgres::PgRow;
    type ThisStore = super::PostgresStore;

    /// Other writers of the secret tables wait until a re-seal commits; readers do not.
    const LOCK_SECRET_TABLES: Option<&str> = Some(
        "LOCK TABLE merchants, gatepay_credentials, okx_credentials IN SHARE ROW EXCLUSIVE MODE",
    );

    include!("secrets_sql.rs");
}
