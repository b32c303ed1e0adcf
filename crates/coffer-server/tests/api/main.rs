//! Coffer's server end to end, as one test binary: each module is one family or concern, tried
//! against a real server, real databases (SQLite and PostgreSQL) and real anvil chains. `kit`
//! builds the environment they share.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, missing_docs)]

mod kit;

mod attacks;
mod checkout_page;
mod gatepay;
mod hostile_inputs;
mod payment_orders;
mod payout_wallets;
mod server;
mod settlement_faults;
mod webhook_example;
mod x402;
mod x402_erc6492;
mod x402_seller;
