//! A small migrator shared by both backends: numbered SQL files compiled into the binary,
//! applied in order, each in its own transaction, recorded in `coffer_migrations`.

/// One migration: version, name and SQL.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Migrations not yet recorded as applied, in version order.
pub(crate) fn pending<'a>(
    all: &'a [Migration],
    applied: &[i64],
) -> impl Iterator<Item = &'a Migration> {
    all.iter()
        .filter(move |migration| !applied.contains(&migration.version))
}
