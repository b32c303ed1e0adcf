//! The SQL both backends share, compiled once per backend.
//!
//! Each `*_sql.rs` file holds one concern's statements and row readers, written once with
//! placeholders `$1`, `$2`, … in order of first use (which both databases bind positionally).
//! [`compile!`] includes every file into a module of the invoking backend, which defines
//! beside the invocation:
//! - `Db` and `ThisStore`: its sqlx database (the macro derives `DbPool` and `DbRow` from it)
//!   and its store, with fields `pool`, `orders` and `sealer` and the methods `connect` and
//!   `migrate` (the macro adds `open_migrated_to`, which opens a store with them);
//! - `BACKEND`, its name;
//! - the few statements whose SQL differs: `ORDER_AND_EVENT_IN_ONE_STATEMENT`,
//!   `LOCK_EVENT_FOR_REDELIVERY`, `CLAIM_DELIVERIES`, `BEGIN_REFUND`, `LOCK_REFUNDED_ORDER`
//!   and `LOCK_SECRET_TABLES`.

/// Compiles every shared SQL file for the invoking backend (see the module docs).
macro_rules! compile {
    () => {
        type DbPool = sqlx::Pool<Db>;
        type DbRow = <Db as sqlx::Database>::Row;

        impl ThisStore {
            /// Opens the database at `url` and applies the migrations up to version `last`
            /// only (tests of a migration write rows the way an older Coffer did, then reopen
            /// with `open`). Plain-text secrets are sealed only when every migration is
            /// applied.
            ///
            /// # Errors
            /// As `open`.
            pub(crate) async fn open_migrated_to(
                url: &str,
                sealer: $crate::secrets::Sealer,
                last: i64,
            ) -> Result<Self, $crate::StoreError> {
                let store = ThisStore {
                    pool: Self::connect(url).await?,
                    orders: $crate::order_writer::OrderWriter::default(),
                    sealer,
                };
                store.migrate(last).await?;
                if last == i64::MAX {
                    store.seal_plain_secrets().await?;
                }
                Ok(store)
            }
        }

        /// Merchants and API keys.
        mod accounts {
            use super::{BACKEND, DbRow, ThisStore};

            include!("accounts_sql.rs");
        }

        /// The payment ledger (orders, payments, chain progress, events, webhook deliveries)
        /// and x402 sales, which share its transactions.
        mod ledger {
            use super::{
                CLAIM_DELIVERIES, Db, DbPool, DbRow, LOCK_EVENT_FOR_REDELIVERY,
                ORDER_AND_EVENT_IN_ONE_STATEMENT, ThisStore,
            };

            include!("orders_sql.rs");
            include!("sales_sql.rs");
        }

        /// The x402 settlement journal.
        mod journal {
            use super::{DbPool, DbRow, ThisStore};

            include!("settlements_sql.rs");
        }

        /// OKX-style credentials.
        mod credentials {
            use super::{DbRow, ThisStore};

            include!("credentials_sql.rs");
        }

        /// GatePay credentials, nonces, orders, refunds and fiat quotes.
        mod checkout {
            use super::{BEGIN_REFUND, Db, DbRow, LOCK_REFUNDED_ORDER, ThisStore};

            include!("checkout_sql.rs");
        }

        /// Claims on authorizations presented to paid routes.
        mod payment_claims {
            use super::ThisStore;

            include!("payment_claims_sql.rs");
        }

        /// The secret columns as a whole (census, rotation).
        mod secrets_storage {
            use super::{DbRow, LOCK_SECRET_TABLES, ThisStore};

            include!("secrets_sql.rs");
        }
    };
}
pub(crate) use compile;
