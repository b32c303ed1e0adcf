//! What the `coffer` binary's integration tests share: running the binary and waiting for it
//! ([`server`]), a local chain with the USDC test token and x402 payments for it ([`chain`]),
//! and `coffer dev` started and stopped ([`dev`]).
//!
//! Each test binary includes the kit with `mod kit;` and uses a part of it.

#![allow(dead_code, reason = "each test binary uses a part of the kit")]

pub mod chain;
pub mod dev;
pub mod server;
