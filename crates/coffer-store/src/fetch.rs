//! Running a query and reading the rows it returns into row types, on either backend.

use sqlx::query::Query;
use sqlx::{Database, Executor, IntoArguments};

use crate::StoreError;

/// The row `query` returns, if any, read by `read`.
pub(crate) async fn optional<'q, 'c, DB, E, T>(
    executor: E,
    query: Query<'q, DB, DB::Arguments<'q>>,
    read: impl FnOnce(&DB::Row) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError>
where
    DB: Database,
    DB::Arguments<'q>: IntoArguments<'q, DB>,
    E: Executor<'c, Database = DB>,
{
    let row = query
        .fetch_optional(executor)
        .await
        .map_err(StoreError::Database)?;
    row.as_ref().map(read).transpose()
}

/// Every row `query` returns, each read by `read`.
pub(crate) async fn all<'q, 'c, DB, E, T>(
    executor: E,
    query: Query<'q, DB, DB::Arguments<'q>>,
    read: impl FnMut(&DB::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError>
where
    DB: Database,
    DB::Arguments<'q>: IntoArguments<'q, DB>,
    E: Executor<'c, Database = DB>,
{
    let rows = query
        .fetch_all(executor)
        .await
        .map_err(StoreError::Database)?;
    rows.iter().map(read).collect()
}
