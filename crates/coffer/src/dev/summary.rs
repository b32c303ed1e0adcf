//! The summary `coffer dev` writes (a JSON file with everything a script needs to pay the local
//! Coffer, readable by its owner only) and the banner it prints.

use std::path::Path;

use alloy::hex;
use alloy::signers::local::PrivateKeySigner;
use coffer_core::ChainRegistry;
use serde::{Deserialize, Serialize};

use crate::dev::chains::LocalChain;
use crate::failure::Failure;
use crate::master_key::write_private_file;

/// The summary file: everything a script needs to pay the local Coffer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Base URL of the API.
    pub api_base_url: String,
    /// The demo merchant.
    pub merchant_id: String,
    /// The demo merchant's API key (dev only).
    pub api_key: String,
    /// The demo merchant's webhook secret (dev only).
    pub webhook_secret: String,
    /// The demo merchant's webhook endpoint: a local inbox that verifies signatures and lists
    /// what it received (`GET`).
    pub webhook_inbox_url: String,
    /// Coffer's own signer (hot wallet / facilitator) on every chain.
    pub signer: String,
    /// The demo merchant's x402 payTo on every local chain: a payment to it (the paywall's, a
    /// Pelago order's, an OKX settlement's) is recorded as the demo merchant's sale.
    pub pay_to: String,
    /// The demo merchant's payout wallet on each chain (`GET /api/payout-wallets/` shows its
    /// balances), funded with gas and tokens: its key is sealed in the database, not here.
    pub payout_wallets: Vec<PayoutWalletSummary>,
    /// OKX-style credentials of the demo merchant, for `/api/v6/x402/*` (dev only).
    pub okx: OkxSummary,
    /// GatePay-style credentials of the demo merchant, for `/v1/pay/*` (dev only).
    pub gatepay: GatePaySummary,
    /// The local chains.
    pub chains: Vec<ChainSummary>,
    /// Shell lines that point another shell at this environment: the `coffer` CLI at its
    /// database and master key, `coffer dev pay` and the seed scripts at this summary
    /// (`COFFER_DEV_SUMMARY`), and scripts at its API and key (`COFFER_URL`,
    /// `COFFER_API_KEY`).
    pub shell: Vec<String>,
    /// The demo x402 paywall route, when a running chain has an EIP-3009 token to price it in.
    pub paywall: Option<PaywallSummary>,
}

/// The demo paywall route in the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaywallSummary {
    /// The paywalled URL: fetch it with an x402 client.
    pub url: String,
    /// Its price (`0.01 USDC`).
    pub price: String,
    /// The same price in base units.
    pub amount: String,
    /// The network it is paid on.
    pub network: String,
    /// Who is paid (registered as the demo merchant's payTo, so each sale is an order).
    pub pay_to: String,
    /// The upstream it proxies to.
    pub upstream_url: String,
    /// The upstream's hit counter (`GET`, `{"hits": n}`).
    pub upstream_hits_url: String,
}

/// A payout wallet in the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayoutWalletSummary {
    /// Coffer's key of the chain.
    pub chain: String,
    /// The wallet's address.
    pub address: String,
}

/// OKX-style credentials in the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OkxSummary {
    /// `OK-ACCESS-KEY`.
    pub access_key: String,
    /// The HMAC secret `OK-ACCESS-SIGN` is made with.
    pub secret: String,
    /// `OK-ACCESS-PASSPHRASE`.
    pub passphrase: String,
}

/// GatePay-style credentials in the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatePaySummary {
    /// `X-GatePay-Certificate-ClientId`.
    pub client_id: String,
    /// The HMAC-SHA512 secret requests and notifications are signed with.
    pub secret: String,
}

/// One local chain in the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainSummary {
    /// Coffer's key (`base-sepolia`).
    pub name: String,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// CAIP-2 id.
    pub caip2: String,
    /// HTTP RPC URL.
    pub rpc_url: String,
    /// Its stablecoins, each installed at the real chain's address.
    pub tokens: Vec<TokenSummary>,
    /// Funded payer accounts.
    pub payers: Vec<AccountSummary>,
}

/// A token in the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSummary {
    /// Ticker.
    pub symbol: String,
    /// Contract address.
    pub address: String,
    /// Decimals.
    pub decimals: u8,
    /// EIP-712 domain name, for EIP-3009 tokens.
    pub eip712_name: Option<String>,
    /// EIP-712 domain version, for EIP-3009 tokens.
    pub eip712_version: Option<String>,
}

/// A funded account (dev keys only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountSummary {
    /// Address.
    pub address: String,
    /// Private key, hex (anvil's public test key).
    pub private_key: String,
}

/// A local chain as the summary shows it: its tokens (as the registry knows them, each
/// installed) and the funded payers.
pub(crate) fn chain_summary(
    chain: &LocalChain,
    registry: &ChainRegistry,
    payers: &[PrivateKeySigner],
) -> ChainSummary {
    let known = registry.by_chain_id(chain.chain_id);
    let tokens = known
        .map(|c| {
            c.assets
                .iter()
                .map(|asset| TokenSummary {
                    symbol: asset.symbol.clone(),
                    address: asset.address.to_checksum(None),
                    decimals: asset.decimals,
                    eip712_name: asset.eip712.as_ref().map(|d| d.name.clone()),
                    eip712_version: asset.eip712.as_ref().map(|d| d.version.clone()),
                })
                .collect()
        })
        .unwrap_or_default();
    ChainSummary {
        name: chain.key.to_owned(),
        chain_id: chain.chain_id,
        caip2: format!("eip155:{}", chain.chain_id),
        rpc_url: chain.anvil.url().to_owned(),
        tokens,
        payers: payers
            .iter()
            .map(|payer| AccountSummary {
                address: payer.address().to_checksum(None),
                private_key: format!("0x{}", hex::encode(payer.to_bytes())),
            })
            .collect(),
    }
}

/// Writes the summary (it holds keys) readable by its owner only, atomically.
///
/// # Errors
/// [`Failure`] naming the file or directory that cannot be written.
pub(crate) fn write_summary(path: &Path, summary: &Summary) -> Result<(), Failure> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(Failure::context(format!(
            "cannot create {}",
            parent.display()
        )))?;
    }
    let text = serde_json::to_string_pretty(summary).map_err(|e| Failure::new(e.to_string()))?;
    write_private_file(path, (text + "\n").as_bytes()).map_err(Failure::new)
}

/// Prints the banner: where everything is, and a request to try.
pub(crate) fn print_banner(summary: &Summary, summary_path: &Path, env_path: &Path) {
    let mut banner = String::new();
    banner.push_str("\n  Coffer dev is running\n\n");
    banner.push_str(&format!("  API          {}\n", summary.api_base_url));
    banner.push_str(&format!("  merchant     {}\n", summary.merchant_id));
    banner.push_str(&format!("  API key      {}\n", summary.api_key));
    banner.push_str(&format!(
        "  GatePay      ClientId {} (its secret is in the summary)\n",
        summary.gatepay.client_id
    ));
    for chain in &summary.chains {
        let tokens: Vec<_> = chain
            .tokens
            .iter()
            .map(|t| format!("{} {}", t.symbol, t.address))
            .collect();
        banner.push_str(&format!(
            "  {:<13}{} (chain {}), {}\n",
            chain.name,
            chain.rpc_url,
            chain.chain_id,
            tokens.join(", ")
        ));
    }
    banner.push_str(&format!(
        "  webhooks     {} (signed deliveries land here)\n",
        summary.webhook_inbox_url
    ));
    if !summary.payout_wallets.is_empty() {
        banner.push_str(
            "  payouts      the demo merchant's funded payout wallet on each chain (GET /api/payout-wallets/)\n",
        );
    }
    if let Some(paywall) = &summary.paywall {
        banner.push_str(&format!(
            "  paywall      {} ({} on {}; upstream hits at {})\n",
            paywall.url, paywall.price, paywall.network, paywall.upstream_hits_url
        ));
    }
    banner.push_str(&format!("  summary      {}\n\n", summary_path.display()));
    banner.push_str(&format!(
        "  In another shell, `source {}` sets:\n",
        env_path.display()
    ));
    for line in &summary.shell {
        banner.push_str(&format!("    {line}\n"));
    }
    banner.push('\n');
    banner.push_str("  Try it there:\n");
    banner.push_str(
        "    curl -s \"$COFFER_URL/api/merchant\" -H \"Authorization: Bearer $COFFER_API_KEY\"\n\n",
    );
    banner.push_str(
        "  Ctrl-C stops Coffer and the chains; run again to resume, --fresh to start over.\n",
    );
    // A closed stdout (a script that stopped reading) must not stop Coffer.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("{banner}\n").as_bytes());
}

/// What another shell needs to use a `coffer dev` whose data is in `data_dir` (paths made
/// absolute, so they work from any folder).
pub(crate) struct ShellSetup<'a> {
    /// The data directory.
    pub data_dir: &'a Path,
    /// Where the summary is written.
    pub summary_path: &'a Path,
    /// The master key file, unless the key comes from the environment.
    pub master_key_file: Option<&'a Path>,
    /// The API.
    pub api_base_url: &'a str,
    /// The demo merchant's API key.
    pub api_key: &'a str,
    /// The demo merchant's webhook inbox.
    pub webhook_inbox_url: &'a str,
    /// The demo merchant's webhook secret.
    pub webhook_secret: &'a str,
}

/// The `export` lines of [`ShellSetup`]: `coffer` on `PATH`, the CLI on this database and
/// master key, `coffer dev pay` and the seed scripts on this summary, and the API, key and
/// webhook inbox for scripts.
pub(crate) fn shell_lines(setup: &ShellSetup<'_>) -> Vec<String> {
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut lines = Vec::new();
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        lines.push(format!("export PATH=\"{}:$PATH\"", bin.display()));
    }
    lines.push(format!(
        "export COFFER__DATABASE__URL=sqlite:{}",
        absolute(&setup.data_dir.join("coffer.db")).display()
    ));
    if let Some(file) = setup.master_key_file {
        lines.push(format!(
            "export COFFER__SECRETS__MASTER_KEY_FILE={}",
            absolute(file).display()
        ));
    }
    lines.push(format!(
        "export COFFER_DEV_SUMMARY={}",
        absolute(setup.summary_path).display()
    ));
    lines.push(format!("export COFFER_URL={}", setup.api_base_url));
    lines.push(format!("export COFFER_API_KEY={}", setup.api_key));
    lines.push(format!(
        "export COFFER_WEBHOOK_INBOX={}",
        setup.webhook_inbox_url
    ));
    lines.push(format!(
        "export COFFER_WEBHOOK_SECRET={}",
        setup.webhook_secret
    ));
    lines
}

/// Writes `env.sh` into the data directory (it holds keys: owner only): the [`shell_lines`],
/// for `source .coffer-dev/env.sh`.
///
/// # Errors
/// [`Failure`] naming the file.
pub(crate) fn write_env_file(
    data_dir: &Path,
    lines: &[String],
) -> Result<std::path::PathBuf, Failure> {
    let path = data_dir.join("env.sh");
    let text = format!(
        "# coffer dev: `source` this file to use the running environment from another shell.\n{}\n",
        lines.join("\n")
    );
    write_private_file(&path, text.as_bytes()).map_err(Failure::new)?;
    Ok(path)
}
