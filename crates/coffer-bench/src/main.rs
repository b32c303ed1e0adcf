//! `coffer-bench`: measurements of Coffer's payment-order and settlement targets on a local anvil chain.
//!
//! - `watcher`: time per block of [`coffer_gateway::workers::watcher::Watcher::step`] with a
//!   given number of open orders, steady state measured apart from the first step after a
//!   start (which loads the whole watched-address set);
//! - `webhook-latency`: with the workers running, the time from mining the block that completes
//!   an order's confirmations to its `payment_order.confirmed` webhook reaching a local
//!   endpoint;
//! - `settle`: x402 settlements per second and gas per settled payment, with Multicall3
//!   batching and with one transaction per payment;
//! - `paywall`: the x402 paywall's overhead per paid request against calling the upstream
//!   directly, and unpaid 402 answers per second;
//! - `verify`: the x402 facilitator's offline verifications per second on one thread (decode,
//!   EIP-712 hash, signer recovery, rules), and signer recovery alone with libsecp256k1 and
//!   k256;
//! - `xpub`: prints the dev deposit xpub, for scripts that set up a merchant with the CLI.
//!
//! Order creation over HTTP is measured with `wrk` against `coffer serve`; `scripts/bench.sh`
//! runs everything and prints the summary table. Each run uses a fresh database (a temporary
//! SQLite file, or a new PostgreSQL database dropped afterwards) and a throwaway anvil chain.

mod paywall;
mod settle;
mod setup;
mod stats;
mod verify;
mod watcher;
mod webhook;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks for Coffer's payment-order targets.
#[derive(Debug, Parser)]
#[command(name = "coffer-bench", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Time the chain watcher per block with N open orders.
    Watcher(watcher::Args),
    /// Time from the confirming block to the `payment_order.confirmed` webhook.
    WebhookLatency(webhook::Args),
    /// Settle x402 payments: throughput and gas per payment, batched and not.
    Settle(settle::Args),
    /// The x402 paywall: paid-request overhead against the upstream, and unpaid 402s per second.
    Paywall(paywall::Args),
    /// Count x402 offline verifications per second on one thread.
    Verify(verify::Args),
    /// Print the dev deposit xpub (`m/44'/60'/1'/0` of the public anvil mnemonic).
    Xpub,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Watcher(args) => watcher::run(args).await,
        Command::WebhookLatency(args) => webhook::run(args).await,
        Command::Settle(args) => settle::run(args).await,
        Command::Paywall(args) => paywall::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Xpub => setup::dev_xpub().map(|xpub| println!("{xpub}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("coffer-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
