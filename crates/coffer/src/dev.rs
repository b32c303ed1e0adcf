//! `coffer dev`: a complete local environment in one command.
//!
//! It starts two anvil chains — chain id 84532 as `base-sepolia` with the EIP-3009 test token
//! installed at Base Sepolia's real USDC address (EIP-712 name "USDC", version "2"), and chain
//! id 56 as `bsc` with the plain 18-decimal token at BSC's USDT address — funds payer accounts,
//! creates a demo merchant with an API key and a webhook secret, serves the API, and writes a
//! machine-readable summary so scripts can start paying at once.
//!
//! State lives in a data directory (default `.coffer-dev/`, mode 0700): the chains' state
//! files, the SQLite database, the master key its secrets are encrypted with (`master.key`,
//! generated on the first run unless one is configured, reused afterwards) and the demo
//! credentials. The summary and the credentials file hold keys, so they are created readable by
//! their owner only (0600). Running again resumes; `--fresh` starts clean. Everything here is
//! for local development only: the accounts are anvil's public test keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::hex;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256, address};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use clap::Args;
use coffer_core::ChainRegistry;
use coffer_evm::anvil::{self, Anvil, AnvilOptions};
use coffer_evm::testnet::{self, PlainTokenSpec, UsdcSpec};
use coffer_server::workers::Intervals;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::cli::Failure;
use crate::config::Config;
use crate::serve::{self, Application};

/// Base Sepolia's USDC address, where the official x402 clients expect USDC on chain 84532.
pub const BASE_SEPOLIA_USDC: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");
/// BSC's USDT address.
pub const BSC_USDT: Address = address!("0x55d398326f99059fF775485246999027B3197955");
/// Dev account indexes funded as payers.
const PAYERS: std::ops::RangeInclusive<u32> = 1..=4;
/// Whole tokens minted to each payer.
const PAYER_TOKENS: u64 = 10_000;
/// Dev account index that receives the demo paywall's payments (the merchant's payTo).
const PAY_TO_ACCOUNT: u32 = 9;
/// The demo paywall route's price.
const DEMO_PRICE: &str = "0.01";

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
}

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
    /// OKX-style credentials of the demo merchant, for `/api/v6/x402/*` (dev only).
    pub okx: OkxSummary,
    /// GatePay-style credentials of the demo merchant, for `/v1/pay/*` (dev only).
    pub gatepay: GatePaySummary,
    /// The local chains.
    pub chains: Vec<ChainSummary>,
    /// The demo x402 paywall route.
    pub paywall: PaywallSummary,
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
    /// Test tokens.
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

/// The demo merchant's credentials, kept in the data directory so a re-run reuses them.
#[derive(Serialize, Deserialize)]
struct DemoCredentials {
    merchant_id: String,
    api_key: String,
    okx: OkxSummary,
    /// Absent in files written before GatePay credentials existed.
    #[serde(default)]
    gatepay: Option<GatePaySummary>,
}

struct LocalChain {
    key: &'static str,
    chain_id: u64,
    anvil: Anvil,
}

fn fail(context: &str) -> impl Fn(coffer_evm::EvmError) -> Failure + '_ {
    move |error| Failure::new(format!("{context}: {error}"))
}

fn io_fail(context: String) -> impl Fn(std::io::Error) -> Failure {
    move |error| Failure::new(format!("{context}: {error}"))
}

/// Runs the local environment until Ctrl-C, then stops the server and the chains.
///
/// # Errors
/// [`Failure`] when anvil is missing, a chain cannot be set up, or the server cannot start.
pub async fn run(mut config: Config, args: DevArgs) -> Result<(), Failure> {
    let shutdown = serve::shutdown_signal();
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir).map_err(io_fail(format!(
            "cannot remove {}",
            args.data_dir.display()
        )))?;
    }
    crate::master_key::create_private_dir(&args.data_dir).map_err(Failure::new)?;
    let binary = anvil::locate_binary().ok_or_else(|| {
        Failure::new("anvil not found: run scripts/install-tools.sh, put Foundry's anvil on PATH, or set COFFER_ANVIL")
    })?;

    eprintln!("coffer dev: starting local chains");
    let mut chains = Vec::new();
    for (key, chain_id) in [("base-sepolia", 84_532), ("bsc", 56)] {
        let options = AnvilOptions {
            binary: binary.clone(),
            chain_id,
            port: 0,
            state_file: Some(args.data_dir.join(format!("{key}.chain.json"))),
            block_time: None,
        };
        let anvil = Anvil::start(&options).await.map_err(fail(key))?;
        chains.push(LocalChain {
            key,
            chain_id,
            anvil,
        });
    }
    let outcome = run_with_chains(&mut config, &args, &chains, shutdown).await;
    eprintln!("coffer dev: stopping local chains");
    for chain in chains {
        if let Err(error) = chain.anvil.stop().await {
            eprintln!("coffer dev: {}: {error}", chain.key);
        }
    }
    outcome
}

async fn run_with_chains(
    config: &mut Config,
    args: &DevArgs,
    chains: &[LocalChain],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    let signer = testnet::dev_account(0).map_err(fail("signer"))?;
    let payers = PAYERS
        .map(testnet::dev_account)
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail("payers"))?;
    for chain in chains {
        eprintln!("coffer dev: {}: preparing test tokens", chain.key);
        prepare_chain(chain, &signer, &payers, args.block_time).await?;
    }

    config.database.url = format!("sqlite:{}", args.data_dir.join("coffer.db").display());
    if config.secrets.master_key()?.is_none() {
        config.secrets.master_key_file =
            Some(crate::master_key::dev_master_key(&args.data_dir).map_err(Failure::new)?);
    }
    config.x402.signer_keys = crate::config::SignerKeys(vec![secrecy::SecretString::from(
        format!("0x{}", hex::encode(signer.to_bytes())),
    )]);
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
    let upstream = crate::dev_upstream::start()
        .await
        .map_err(io_fail("cannot start the demo upstream".to_owned()))?;
    let pay_to = testnet::dev_account(PAY_TO_ACCOUNT)
        .map_err(fail("payTo account"))?
        .address();
    config
        .paywall
        .routes
        .push(coffer_server::paywall::PaywallRouteConfig {
            path: "/premium/*".to_owned(),
            method: Some("GET".to_owned()),
            price: DEMO_PRICE.to_owned(),
            networks: vec!["base-sepolia".to_owned()],
            assets: vec!["USDC".to_owned()],
            pay_to: pay_to.to_checksum(None),
            upstream: upstream.base_url.clone(),
            description: "A premium quote (coffer dev demo)".to_owned(),
            mime_type: "application/json".to_owned(),
            max_timeout_seconds: 300,
        });
    let registry = config.registry()?;
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
    let merchants = app.state().merchants.clone();
    let demo = demo_merchant(app.state(), &args.data_dir).await?;
    let merchant = merchants.get(&merchant_id_of(&demo.merchant_id)?).await?;
    let gatepay_secret = demo.gatepay.as_ref().map(|g| g.secret.clone());
    let inbox_url = crate::dev_inbox::start(merchant.webhook_secret.clone(), gatepay_secret)
        .await
        .map_err(io_fail("cannot start the webhook inbox".to_owned()))?;
    let merchant = app
        .state()
        .store
        .set_merchant_webhook_url(&merchant.id, Some(&inbox_url))
        .await
        .map_err(|error| Failure::new(format!("demo merchant webhook: {error}")))?;
    let deposit_key = coffer_evm::hd::dev_deposit_key(testnet::DEV_MNEMONIC)
        .and_then(|key| key.to_base58())
        .map_err(|error| Failure::new(format!("dev deposit key: {error}")))?;
    app.state()
        .store
        .set_wallet(
            &merchant.id,
            0,
            &deposit_key,
            chrono::Utc::now().timestamp_millis(),
        )
        .await
        .map_err(|error| Failure::new(format!("dev deposit wallet: {error}")))?;

    // The demo merchant is paid over x402 at one address on every local chain (the paywall on
    // base-sepolia; Pelago orders on both).
    for chain in chains {
        app.state()
            .sales
            .add_pay_to(&merchant, chain.chain_id, pay_to)
            .await
            .map_err(|error| Failure::new(format!("demo payTo: {error}")))?;
    }
    let paywall = PaywallSummary {
        url: format!("{api_base_url}/premium/quote"),
        price: format!("{DEMO_PRICE} USDC"),
        amount: "10000".to_owned(),
        network: "base-sepolia".to_owned(),
        pay_to: pay_to.to_checksum(None),
        upstream_url: upstream.base_url.clone(),
        upstream_hits_url: upstream.hits_url.clone(),
    };
    let summary = Summary {
        paywall,
        api_base_url: api_base_url.clone(),
        merchant_id: demo.merchant_id.clone(),
        api_key: demo.api_key.clone(),
        okx: demo.okx.clone(),
        gatepay: demo
            .gatepay
            .clone()
            .ok_or_else(|| Failure::new("demo GatePay credential missing"))?,
        webhook_secret: merchant.webhook_secret.clone(),
        webhook_inbox_url: inbox_url.clone(),
        signer: signer.address().to_checksum(None),
        chains: chains
            .iter()
            .map(|chain| chain_summary(chain, &registry, &payers))
            .collect(),
    };
    let summary_path = args
        .summary
        .clone()
        .unwrap_or_else(|| args.data_dir.join("summary.json"));
    write_summary(&summary_path, &summary)?;
    print_banner(&summary, &summary_path);
    app.run_until(shutdown).await?;
    Ok(())
}

fn merchant_id_of(text: &str) -> Result<coffer_core::MerchantId, Failure> {
    coffer_core::MerchantId::parse(text).map_err(|error| Failure::new(error.to_string()))
}

async fn prepare_chain(
    chain: &LocalChain,
    signer: &PrivateKeySigner,
    payers: &[PrivateKeySigner],
    block_time: u64,
) -> Result<(), Failure> {
    let url = chain
        .anvil
        .url()
        .parse()
        .map_err(|_| Failure::new(format!("{}: bad RPC URL", chain.key)))?;
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer.clone()))
        .connect_http(url);
    let owner = signer.address();
    let (token, decimals, installed) = if chain.chain_id == 84_532 {
        let spec = UsdcSpec {
            name: "USDC".to_owned(),
            version: "2".to_owned(),
            symbol: "USDC".to_owned(),
            decimals: 6,
            owner,
        };
        let installed = testnet::install_usdc_at(&provider, BASE_SEPOLIA_USDC, &spec)
            .await
            .map_err(fail(chain.key))?;
        (BASE_SEPOLIA_USDC, spec.decimals, installed)
    } else {
        let spec = PlainTokenSpec {
            name: "Tether USD".to_owned(),
            symbol: "USDT".to_owned(),
            decimals: 18,
            owner,
        };
        let installed = testnet::install_plain_token_at(&provider, BSC_USDT, &spec)
            .await
            .map_err(fail(chain.key))?;
        (BSC_USDT, spec.decimals, installed)
    };
    // Public chains have Multicall3; settlement batches use it here too.
    testnet::install_multicall3(&provider)
        .await
        .map_err(fail(chain.key))?;
    if installed {
        let amount = U256::from(PAYER_TOKENS) * U256::from(10u64).pow(U256::from(decimals));
        for payer in payers {
            testnet::mint(&provider, token, payer.address(), amount)
                .await
                .map_err(fail(chain.key))?;
        }
    }
    // Blocks keep coming without transactions, so confirmations advance.
    provider
        .raw_request::<_, ()>("evm_setIntervalMining".into(), (block_time,))
        .await
        .map_err(|error| {
            Failure::new(format!(
                "{}: cannot start interval mining: {error}",
                chain.key
            ))
        })?;
    Ok(())
}

async fn demo_merchant(
    state: &coffer_server::AppState,
    data_dir: &Path,
) -> Result<DemoCredentials, Failure> {
    let path = data_dir.join("demo-merchant.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(saved) = serde_json::from_str::<DemoCredentials>(&text)
    {
        let key = SecretString::from(saved.api_key.clone());
        if let Ok(merchant) = state.merchants.authenticate(&key).await {
            if saved.gatepay.is_some() {
                return Ok(saved);
            }
            let mut saved = saved;
            saved.gatepay = Some(demo_gatepay(state, &merchant.id).await?);
            write_demo(&path, &saved)?;
            return Ok(saved);
        }
    }
    let merchant = state.merchants.create("Demo Shop", None).await?;
    let created = state
        .merchants
        .create_key(&merchant.id, "coffer dev")
        .await?;
    let okx = state
        .okx
        .create(&merchant.id)
        .await
        .map_err(|error| Failure::new(format!("demo OKX credential: {error}")))?;
    let saved = DemoCredentials {
        merchant_id: merchant.id.to_string(),
        api_key: created.key.expose_secret().to_owned(),
        okx: OkxSummary {
            access_key: okx.access_key.clone(),
            secret: okx.secret.expose_secret().to_owned(),
            passphrase: okx.passphrase.expose_secret().to_owned(),
        },
        gatepay: Some(demo_gatepay(state, &merchant.id).await?),
    };
    write_demo(&path, &saved)?;
    Ok(saved)
}

async fn demo_gatepay(
    state: &coffer_server::AppState,
    merchant: &coffer_core::MerchantId,
) -> Result<GatePaySummary, Failure> {
    let created = state
        .gatepay
        .create(merchant)
        .await
        .map_err(|error| Failure::new(format!("demo GatePay credential: {error}")))?;
    Ok(GatePaySummary {
        client_id: created.client_id.clone(),
        secret: created.secret.expose_secret().to_owned(),
    })
}

fn write_demo(path: &Path, saved: &DemoCredentials) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(saved).map_err(|e| Failure::new(e.to_string()))?;
    crate::master_key::write_private_file(path, text.as_bytes()).map_err(Failure::new)
}

fn chain_summary(
    chain: &LocalChain,
    registry: &ChainRegistry,
    payers: &[PrivateKeySigner],
) -> ChainSummary {
    let known = registry.by_chain_id(chain.chain_id);
    let tokens = known
        .map(|c| {
            c.assets
                .iter()
                .filter(|asset| asset.address == BASE_SEPOLIA_USDC || asset.address == BSC_USDT)
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
fn write_summary(path: &Path, summary: &Summary) -> Result<(), Failure> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(io_fail(format!("cannot create {}", parent.display())))?;
    }
    let text = serde_json::to_string_pretty(summary).map_err(|e| Failure::new(e.to_string()))?;
    crate::master_key::write_private_file(path, (text + "\n").as_bytes()).map_err(Failure::new)
}

fn print_banner(summary: &Summary, summary_path: &Path) {
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
    banner.push_str(&format!(
        "  paywall      {} ({}; upstream hits at {})\n",
        summary.paywall.url, summary.paywall.price, summary.paywall.upstream_hits_url
    ));
    banner.push_str(&format!("  summary      {}\n\n", summary_path.display()));
    banner.push_str("  Try it:\n");
    banner.push_str(&format!(
        "    curl -s {}/api/merchant -H \"Authorization: Bearer {}\"\n\n",
        summary.api_base_url, summary.api_key
    ));
    banner.push_str(
        "  Ctrl-C stops Coffer and the chains; run again to resume, --fresh to start over.\n",
    );
    // A closed stdout (a script that stopped reading) must not stop Coffer.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("{banner}\n").as_bytes());
}
