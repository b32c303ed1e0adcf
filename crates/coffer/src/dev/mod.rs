//! `coffer dev`: a complete local environment in one command.
//!
//! It starts a local anvil chain for each network the vendor examples use — chain id 84532 as
//! `base-sepolia`, 56 as `bsc`, 137 as `polygon` and 196 as `x-layer` (`--chains` picks a
//! subset) — with every stablecoin the registry lists for the chain installed at its real
//! address, decimals and EIP-712 domain (Base Sepolia's USDC, BSC's 18-decimal USDT and USDC,
//! Polygon's USDC and plain 6-decimal USDT, X Layer's EIP-3009 USD₮0 and USDG), funds payer
//! accounts, creates a demo merchant with an API key, vendor credentials and a webhook secret,
//! serves the API, and writes a machine-readable summary so scripts can start paying at once.
//! Each chain's RPC port is fixed (8545 for `base-sepolia`, then 8546, 8547, 8548 in that
//! order; `--rpc-ports-from` moves them, 0 picks free ports).
//!
//! State lives in a data directory (default `.coffer-dev/`, mode 0700): the chains' state
//! files, the SQLite database, the master key its secrets are encrypted with (`master.key`,
//! generated on the first run unless one is configured, reused afterwards) and the demo
//! credentials. The summary and the credentials file hold keys, so they are created readable by
//! their owner only (0600). Running again resumes; `--fresh` starts clean. Everything here is
//! for local development only: the accounts are anvil's public test keys.
//!
//! This module wires the environment together; its parts are `chains` (the anvil nodes and
//! their tokens), `demo` (the demo merchant and its paywall route), [`summary`] (the summary
//! file and the banner), [`inbox`] (the demo merchant's webhook endpoint) and [`upstream`] (the
//! API behind the demo paywall). anvil is found through `COFFER_ANVIL`, then `.tools/`, then
//! `PATH`.

mod chains;
mod demo;
pub mod inbox;
pub mod pay;
pub mod summary;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use alloy::hex;
use alloy::signers::local::PrivateKeySigner;
use clap::{Args, Subcommand};
use coffer_evm::anvil;
use coffer_evm::testnet;
use coffer_gateway::workers::Intervals;

use crate::config::{Config, SignerKeys};
use crate::dev::chains::{LocalChain, PAYERS};
use crate::dev::summary::{chain_summary, print_banner, write_summary};
use crate::failure::Failure;
use crate::master_key::{create_private_dir, dev_master_key};
use crate::serve::{self, Application};

pub use chains::DEV_CHAINS;
pub use summary::{
    AccountSummary, ChainSummary, GatePaySummary, OkxSummary, PayoutWalletSummary, PaywallSummary,
    Summary, TokenSummary,
};

/// `coffer dev`: run the environment, or pay it from the terminal.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevCommand {
    /// Pay the running environment instead of starting it.
    #[command(subcommand)]
    pub action: Option<DevAction>,
    /// How to run it.
    #[command(flatten)]
    pub args: DevArgs,
}

/// What `coffer dev` can do besides running.
#[derive(Debug, Clone, Subcommand)]
pub enum DevAction {
    /// Pay an order of the running coffer dev from a funded dev account (what is still due,
    /// or --amount).
    Pay(pay::PayArgs),
    /// Pay a paywalled URL with an x402 payment, signed as the official clients sign it.
    PayX402(pay::PayX402Args),
}

/// Runs `coffer dev` or one of its payment commands.
///
/// # Errors
/// [`Failure`] from the environment or the payment.
pub async fn command(config: Config, command: DevCommand) -> Result<(), Failure> {
    match command.action {
        None => run(config, command.args).await,
        Some(DevAction::Pay(args)) => pay::pay(args).await,
        Some(DevAction::PayX402(args)) => pay::pay_x402(args).await,
    }
}

/// Options of `coffer dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Port for the API server (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Where to write the JSON summary (default: summary.json in the data directory).
    #[arg(long, value_name = "PATH")]
    pub summary: Option<PathBuf>,
    /// Delete the data directory first and start from scratch.
    #[arg(long)]
    pub fresh: bool,
    /// Where chains, database and demo credentials are kept.
    #[arg(long, default_value = ".coffer-dev", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Seconds between blocks on the local chains.
    #[arg(long, default_value_t = 1)]
    pub block_time: u64,
    /// The local chains to run, comma-separated (default: all of base-sepolia, bsc, polygon,
    /// x-layer).
    #[arg(long, value_delimiter = ',', value_name = "CHAINS")]
    pub chains: Vec<String>,
    /// RPC port of the first local chain; the others follow in order (0: free ports).
    #[arg(long, default_value_t = 8545, value_name = "PORT")]
    pub rpc_ports_from: u16,
}

/// Runs the local environment until Ctrl-C, then stops the server and the chains.
///
/// # Errors
/// [`Failure`] when anvil is missing, a chain cannot be set up, or the server cannot start.
pub async fn run(mut config: Config, args: DevArgs) -> Result<(), Failure> {
    let shutdown = serve::shutdown_signal();
    let registry = config.registry()?;
    let keys = chains::select(&args.chains, &registry)?;
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir).map_err(Failure::context(format!(
            "cannot remove {}",
            args.data_dir.display()
        )))?;
    }
    create_private_dir(&args.data_dir).map_err(Failure::new)?;
    let binary = anvil::locate_binary().ok_or_else(|| {
        Failure::new("anvil not found: run scripts/install-tools.sh, put Foundry's anvil on PATH, or set COFFER_ANVIL")
    })?;

    eprintln!("coffer dev: starting local chains: {}", keys.join(", "));
    let first_port = (args.rpc_ports_from != 0).then_some(args.rpc_ports_from);
    let chains = chains::start(&binary, &args.data_dir, &keys, &registry, first_port).await?;
    let outcome = run_with_chains(&mut config, &args, &chains, shutdown).await;
    eprintln!("coffer dev: stopping local chains");
    chains::stop(chains).await;
    outcome
}

async fn run_with_chains(
    config: &mut Config,
    args: &DevArgs,
    chains: &[LocalChain],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    let signer = testnet::dev_account(0).map_err(Failure::context("signer"))?;
    let payers = PAYERS
        .map(testnet::dev_account)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::context("payers"))?;
    configure(config, args, chains, &signer)?;
    let registry = config.registry()?;
    eprintln!("coffer dev: installing tokens and funding payers");
    let preparing = chains.iter().map(|chain| {
        let registry = &registry;
        let (signer, payers) = (&signer, &payers);
        async move {
            let known = registry
                .by_chain_id(chain.chain_id)
                .ok_or_else(|| Failure::new(format!("{}: not in the chain registry", chain.key)))?;
            chains::prepare(chain, known, signer, payers, args.block_time).await
        }
    });
    for prepared in futures_util::future::join_all(preparing).await {
        prepared?;
    }

    let upstream = upstream::start()
        .await
        .map_err(Failure::context("cannot start the demo upstream"))?;
    let pay_to = demo::pay_to()?;
    let paywall_token = demo::paywall_token(chains, &registry);
    if let Some(token) = &paywall_token {
        config
            .paywall
            .routes
            .push(demo::paywall_route(pay_to, &upstream, token));
    }
    // The webhook inbox listens on this machine: loopback is allowed, on top of the configured
    // allow-lists.
    let outbound = config.outbound.policy()?.with_loopback_allowed();
    let app = Application::build_with(config, registry.clone())
        .await?
        .with_outbound_policy(outbound)
        .with_intervals(Intervals {
            watcher: Duration::from_millis(config.server.watcher_poll_ms),
            expirer: Duration::from_millis(500),
            dispatcher: Duration::from_millis(500),
        });
    let api_base_url = format!("http://{}", app.address());
    let demo = demo::set_up(app.state(), &args.data_dir, chains, pay_to).await?;
    let payout_wallets = demo::payout_wallets(
        app.state(),
        &demo.credentials.merchant_id,
        chains,
        &registry,
        &signer,
    )
    .await?
    .into_iter()
    .map(|(chain, address)| summary::PayoutWalletSummary { chain, address })
    .collect();
    let summary_path = args
        .summary
        .clone()
        .unwrap_or_else(|| args.data_dir.join("summary.json"));
    let shell = summary::shell_lines(&summary::ShellSetup {
        data_dir: &args.data_dir,
        summary_path: &summary_path,
        master_key_file: config.secrets.master_key_file.as_deref(),
        api_base_url: &api_base_url,
        api_key: &demo.credentials.api_key,
        webhook_inbox_url: &demo.inbox_url,
        webhook_secret: &demo.webhook_secret,
    });
    let summary = Summary {
        paywall: paywall_token
            .as_ref()
            .map(|token| demo::paywall_summary(&api_base_url, pay_to, &upstream, token)),
        api_base_url,
        merchant_id: demo.credentials.merchant_id,
        api_key: demo.credentials.api_key,
        okx: demo.credentials.okx,
        gatepay: demo
            .credentials
            .gatepay
            .ok_or_else(|| Failure::new("demo GatePay credential missing"))?,
        webhook_secret: demo.webhook_secret,
        webhook_inbox_url: demo.inbox_url,
        signer: signer.address().to_checksum(None),
        pay_to: pay_to.to_checksum(None),
        payout_wallets,
        chains: chains
            .iter()
            .map(|chain| chain_summary(chain, &registry, &payers))
            .collect(),
        shell,
    };
    let env_path = summary::write_env_file(&args.data_dir, &summary.shell)?;
    write_summary(&summary_path, &summary)?;
    print_banner(&summary, &summary_path, &env_path);
    app.run_until(shutdown).await?;
    Ok(())
}

/// Points the configuration at the local environment: a SQLite database and (unless one is
/// configured) a master key in the data directory, `signer` as Coffer's signer, the chains'
/// RPC URLs, and the listening port.
fn configure(
    config: &mut Config,
    args: &DevArgs,
    chains: &[LocalChain],
    signer: &PrivateKeySigner,
) -> Result<(), Failure> {
    config.database.url = format!("sqlite:{}", args.data_dir.join("coffer.db").display());
    if config.secrets.master_key()?.is_none() {
        config.secrets.master_key_file =
            Some(dev_master_key(&args.data_dir).map_err(Failure::new)?);
    }
    config.x402.signer_keys = SignerKeys(vec![secrecy::SecretString::from(format!(
        "0x{}",
        hex::encode(signer.to_bytes())
    ))]);
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], args.port));
    for chain in chains {
        let entry = config.chains.entry(chain.key.to_owned()).or_default();
        entry.rpc_urls = vec![chain.anvil.url().to_owned()];
        entry.confirmations = Some(2);
    }
    // Payment-order examples say `"blockchain": "base"`: locally that is the Base Sepolia chain.
    config
        .chains
        .entry("base".to_owned())
        .or_default()
        .cryptopay_slug = Some("base-mainnet".to_owned());
    config
        .chains
        .entry("base-sepolia".to_owned())
        .or_default()
        .cryptopay_slug = Some("base".to_owned());
    Ok(())
}
