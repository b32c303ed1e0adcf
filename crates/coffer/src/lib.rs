//! The Coffer binary's library: the CLI, configuration, wiring and `coffer dev`.
//!
//! `main` only parses arguments and calls [`cli::run`]. Everything here is in a library so that
//! integration tests can build the same [`serve::Application`] the binary runs.
//!
//! - [`config`]: layered, typed, validated configuration and the `config example` template;
//! - [`serve`]: opening the store, building the server, binding, graceful shutdown;
//! - [`dev`]: the local environment — anvil chains, test tokens, funded payers, a demo
//!   merchant and a summary file;
//! - [`master_key`]: the master key that encrypts secrets at rest (generate, rotate, status)
//!   and files only their owner can read;
//! - [`cli`]: the commands.

pub mod cli;
pub mod config;
pub mod dev;
pub mod dev_inbox;
pub mod dev_upstream;
pub mod master_key;
pub mod serve;
pub mod telemetry;
