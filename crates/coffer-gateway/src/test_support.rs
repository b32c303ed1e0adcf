//! What the property tests of the request authenticators share: a merchant over a fresh
//! SQLite database with a runtime to drive the async services from proptest's synchronous
//! runner, header maps built from raw bytes, and the runner itself.

#![cfg(test)]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use coffer_store::MerchantRow;
use coffer_store::testing::{Backend, TestDatabase};
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::merchants::Merchants;

/// A merchant over a fresh SQLite database, and the runtime its services run on.
pub(crate) struct MerchantFixture {
    pub runtime: tokio::runtime::Runtime,
    pub db: TestDatabase,
    pub merchant: MerchantRow,
}

impl MerchantFixture {
    pub fn new() -> MerchantFixture {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (db, merchant) = runtime.block_on(async {
            let db = TestDatabase::new(Backend::Sqlite).await.unwrap();
            let merchant = Merchants::new(db.store.clone())
                .create("Shop", None)
                .await
                .unwrap();
            (db, merchant)
        });
        MerchantFixture {
            runtime,
            db,
            merchant,
        }
    }
}

/// The headers a client sent, as a map; `None` when a value is no valid header value at all
/// (no HTTP server would pass it on).
pub(crate) fn header_map(headers: &[(&'static str, Vec<u8>)]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            HeaderName::from_static(name),
            HeaderValue::from_bytes(value).ok()?,
        );
    }
    Some(map)
}

/// Runs `test` on 128 cases of `strategy` (from `PROPTEST_RNG_SEED` when set).
pub(crate) fn run<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config::with_cases(128));
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}");
    }
}
