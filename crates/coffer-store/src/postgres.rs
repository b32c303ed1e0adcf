//! The PostgreSQL backend, for several Coffer replicas sharing one database.
//!
//! Migrations run under a session advisory lock so that replicas starting together apply each
//! migration once.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::StoreError;
use crate::migrate::{self, Migration};
use crate::order_writer::OrderWriter;
use crate::secrets::Sealer;

const MIGRATIONS: &[Migration] = crate::migrate::migrations!("postgres");

/// The table recording which migrations were applied.
const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS coffer_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL)";

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

    /// A pool of connections to the database at `url`.
    async fn connect(url: &str) -> Result<DbPool, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
        PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(StoreError::Database)
    }

    /// Applies the pending migrations up to version `last`.
    async fn migrate(&self, last: i64) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::Database)?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::Database)?;
        let result =
            migrate::apply::<sqlx::Postgres>(&mut conn, CREATE_MIGRATIONS_TABLE, MIGRATIONS, last)
                .await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::Database);
        result.and(unlocked.map(drop))
    }
}

// The SQL shared with the other backend, compiled with this backend's types and the
// statements that differ here (see `crate::shared_sql`).

type Db = sqlx::Postgres;
type ThisStore = PostgresStore;

const BACKEND: &str = "postgres";

/// Whether an order and its event are written by one statement: yes, one round trip for an
/// order and its event instead of four.
const ORDER_AND_EVENT_IN_ONE_STATEMENT: bool = true;

/// Locks the event's row before a redelivery is counted, so concurrent redeliveries of one
/// event (from any replica) are counted one after the other.
const LOCK_EVENT_FOR_REDELIVERY: &str =
    "SELECT event_id FROM events WHERE event_id = $1 FOR UPDATE";

/// Claims the deliveries due, oldest first, skipping rows another replica is claiming.
const CLAIM_DELIVERIES: &str = "UPDATE webhook_deliveries SET locked_until_ms = $1
    WHERE id IN (SELECT id FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at_ms <= $2 AND locked_until_ms <= $2
                 ORDER BY next_attempt_at_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED)
    RETURNING delivery_id";

/// A refund's transaction (read committed: each statement sees what committed before it).
const BEGIN_REFUND: &str = "BEGIN";

/// The refunded order, locked until the transaction ends: refunds of one order are decided
/// one after the other, each seeing the ones before.
const LOCK_REFUNDED_ORDER: &str = "SELECT p.status, p.amount_paid FROM gatepay_orders g
    JOIN payment_orders p ON p.order_id = g.order_id
    WHERE g.merchant_id = $1 AND g.prepay_id = $2
    FOR UPDATE";

/// Other writers of the secret tables wait until a re-seal commits; readers do not.
const LOCK_SECRET_TABLES: Option<&str> =
    Some("LOCK TABLE merchants, gatepay_credentials, okx_credentials IN SHARE ROW EXCLUSIVE MODE");

crate::shared_sql::compile!();
