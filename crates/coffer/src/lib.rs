//! The Coffer binary's library: the CLI, configuration, wiring and `coffer dev`.
//!
//! `main` only parses arguments and calls [`cli::run`]. Everything here is in a library so that
//! integration tests can build the same [`serve::Application`] the binary runs.
//!
//! - [`cli`]: the commands, one module per command group (`cli::merchant`, `cli::key`,
//!   `cli::credentials` for `okx-key` and `gatepay-key`, `cli::wallet`, `cli::payto`,
//!   `cli::signer`, `cli::secrets`, `cli::config`); `serve`, `migrate` and `dev` are run from
//!   `cli` itself;
//! - [`dev`]: the local environment — `dev::chains` (anvil chains with test tokens and funded
//!   payers), `dev::demo` (the demo merchant and its paywall route), [`dev::summary`] (the
//!   summary file and banner), [`dev::inbox`] (the demo webhook inbox) and [`dev::upstream`]
//!   (the API behind the demo paywall);
//! - [`failure`]: [`failure::Failure`], the message and exit code of a failed command, which
//!   `cli` and `dev` both answer with;
//! - [`config`]: layered, typed, validated configuration and the `config example` template;
//! - [`serve`]: opening the store, building the server, binding, graceful shutdown;
//! - [`master_key`]: files only their owner can read, and the master key `coffer dev` keeps;
//! - [`telemetry`]: logging to stderr, pretty or JSON.
//!
//! Imports go one way: `cli` → `dev` → `serve` → `config`, with `failure` and `master_key`
//! below `cli` and `dev`; no module imports one that imports it.

pub mod cli;
pub mod config;
pub mod dev;
pub mod failure;
pub mod master_key;
pub mod serve;
pub mod telemetry;
