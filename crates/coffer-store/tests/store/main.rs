//! The store's suites, each run on SQLite and PostgreSQL (`on_both_databases!`): accounts and
//! migrations (`conformance`), the payment ledger, the settlement journal, x402 sales, GatePay
//! checkout, payment claims and secrets at rest. Each test takes a fresh database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod checkout;
mod conformance;
mod fixtures;
mod journal;
mod ledger;
mod payment_claims;
mod sales;
mod secrets;
