//! A small migrator shared by both backends: numbered SQL files compiled into the binary,
//! applied in order, each in its own transaction, recorded in `coffer_migrations`.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Connection, Database, Decode, Encode, Executor, IntoArguments, Type};

use crate::StoreError;

/// One migration: version, name and SQL.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Applies the migrations of `all` not yet recorded, up to version `last`, on `conn`: each in
/// its own transaction together with its record. `create_table` makes the record table, in the
/// backend's column types, if it is missing.
pub(crate) async fn apply<DB>(
    conn: &mut DB::Connection,
    create_table: &str,
    all: &[Migration],
    last: i64,
) -> Result<(), StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    sqlx::raw_sql(create_table)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::Database)?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM coffer_migrations")
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::Database)?;
    let pending = all
        .iter()
        .filter(|migration| !applied.contains(&migration.version) && migration.version <= last);
    for migration in pending {
        let failed = |source| StoreError::Migration {
            version: migration.version,
            source,
        };
        let mut tx = conn.begin().await.map_err(failed)?;
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

/// Coffer's migrations for one backend, in order: every backend has the same versions and
/// names, each with its own SQL in `migrations/<backend>/<number>_<name>.sql`.
macro_rules! migrations {
    ($backend:literal) => {
        $crate::migrate::migrations!($backend:
            1 "0001" merchants_and_api_keys,
            2 "0002" payment_orders,
            3 "0003" settlements,
            4 "0004" gatepay,
            5 "0005" x402_sales,
            6 "0006" settlement_transactions,
            7 "0007" settlement_terms,
            8 "0008" gatepay_order_facts,
            9 "0009" payment_claims,
            10 "0010" event_formats,
            11 "0011" payout_wallets,
        )
    };
    ($backend:literal: $($version:literal $number:literal $name:ident,)*) => {
        &[$(
            $crate::migrate::Migration {
                version: $version,
                name: stringify!($name),
                sql: include_str!(concat!(
                    "../migrations/", $backend, "/", $number, "_", stringify!($name), ".sql"
                )),
            },
        )*]
    };
}
pub(crate) use migrations;
