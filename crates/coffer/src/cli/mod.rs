//! The `coffer` commands: the argument grammar, and [`run`], which loads the configuration and
//! hands each command to the module of its group.
//!
//! One module per command group (`merchant`, `key`, `credentials` for `okx-key` and
//! `gatepay-key`, `wallet`, `payto`, `signer`, `secrets`, `config`); `store` and `output` hold
//! what the groups share: opening the database, reading `--merchant`, printing JSON. `serve`,
//! `migrate` and `dev` are single commands, run here.

pub mod config;
pub mod credentials;
pub mod key;
pub mod merchant;
mod output;
pub mod payout_wallet;
pub mod payto;
pub mod secrets;
pub mod signer;
mod store;
pub mod wallet;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::dev::{self, DevCommand};
use crate::failure::Failure;
use crate::serve::{self, Application};
use crate::telemetry;

/// Self-hosted crypto payment gateway.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML). Defaults to ./coffer.toml when it exists.
    #[arg(long, short, global = true, env = "COFFER_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A top-level command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Run everything locally: anvil chains for Base Sepolia, BSC, Polygon and X Layer with
    /// their stablecoins, funded payers, a demo merchant, and the server; `coffer dev pay` and
    /// `coffer dev pay-x402` pay it from the terminal.
    Dev(DevCommand),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage merchants.
    Merchant {
        /// What to do with merchants.
        #[command(subcommand)]
        action: merchant::MerchantAction,
    },
    /// Manage API keys.
    Key {
        /// What to do with keys.
        #[command(subcommand)]
        action: key::KeyAction,
    },
    /// Manage OKX-style API credentials (for the `/api/v6/…/x402` facilitator endpoints).
    OkxKey {
        /// What to do with OKX credentials.
        #[command(subcommand)]
        action: credentials::OkxKeyAction,
    },
    /// Manage GatePay-style API credentials (ClientId and secret, for `/v1/pay/…`).
    GatepayKey {
        /// What to do with GatePay credentials.
        #[command(subcommand)]
        action: credentials::GatePayKeyAction,
    },
    /// Manage merchants' deposit wallets (extended public keys).
    Wallet {
        /// What to do with wallets.
        #[command(subcommand)]
        action: wallet::WalletAction,
    },
    /// Manage merchants' x402 payTo addresses: settlements paid to one are recorded as the
    /// merchant's orders (with a payment and webhooks).
    Payto {
        /// What to do with payTo addresses.
        #[command(subcommand)]
        action: payto::PayToAction,
    },
    /// Manage merchants' payout wallets: the hot wallet per chain that refunds and payouts
    /// go out from (its key sealed with the master key, never printed).
    PayoutWallet {
        /// What to do with payout wallets.
        #[command(subcommand)]
        action: payout_wallet::PayoutWalletAction,
    },
    /// Write encrypted keystores of x402 settlement signers (for `x402.signer_keystores`).
    Signer {
        /// What to do with signers.
        #[command(subcommand)]
        action: signer::SignerAction,
    },
    /// Work with the master key that encrypts secrets at rest (webhook, GatePay and OKX
    /// secrets, payout wallet keys): make one, rotate it, see how the stored secrets are
    /// encrypted.
    Secrets {
        /// What to do with the master key.
        #[command(subcommand)]
        action: secrets::SecretsAction,
    },
    /// Work with configuration.
    Config {
        /// What to do with configuration.
        #[command(subcommand)]
        action: config::ConfigAction,
    },
}

fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit.map(Path::to_path_buf).or_else(|| {
        let default = PathBuf::from("coffer.toml");
        default.is_file().then_some(default)
    })
}

/// Runs one command.
///
/// # Errors
/// [`Failure`] with the message and exit code to report.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let path = config_path(cli.config.as_deref());
    if let Command::Config {
        action: config::ConfigAction::Example,
    } = cli.command
    {
        config::example();
        return Ok(());
    }
    let config = Config::load(path.as_deref())?;
    telemetry::init(&config.log);
    match cli.command {
        Command::Config { action } => config::command(&config, action),
        Command::Serve => {
            let shutdown = serve::shutdown_signal();
            let app = Application::build(&config).await?;
            tracing::info!(address = %app.address(), backend = app.state().gateway.store.backend(), "coffer is listening");
            app.run_until(shutdown).await?;
            Ok(())
        }
        Command::Dev(command) => dev::command(config, command).await,
        Command::Migrate => {
            let store = store::open_or_create_store(&config).await?;
            println!("database is up to date ({})", store.backend());
            Ok(())
        }
        Command::Merchant { action } => merchant::command(&config, action).await,
        Command::Key { action } => key::command(&config, action).await,
        Command::Wallet { action } => wallet::command(&config, action).await,
        Command::OkxKey { action } => credentials::okx_key_command(&config, action).await,
        Command::GatepayKey { action } => credentials::gatepay_key_command(&config, action).await,
        Command::Payto { action } => payto::command(&config, action).await,
        Command::PayoutWallet { action } => payout_wallet::command(&config, action).await,
        Command::Signer { action } => signer::command(&config, action),
        Command::Secrets { action } => secrets::command(&config, action).await,
    }
}
