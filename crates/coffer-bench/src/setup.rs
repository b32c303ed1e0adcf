//! What every benchmark needs: a fresh database, an anvil chain with the test USDC at Base
//! Sepolia's address and a funded payer, the application state, and a merchant with a deposit
//! wallet.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, TxHash, U256, address};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use anyhow::{Context, Result, anyhow, bail};
use coffer_core::{ChainOverride, ChainRegistry};
use coffer_evm::anvil::{self, Anvil, AnvilOptions};
use coffer_evm::contracts::IERC20;
use coffer_evm::testnet::{self, DEV_MNEMONIC, UsdcSpec};
use coffer_server::AppState;
use coffer_store::{MerchantRow, Store};
use sqlx::Connection;

/// Base Sepolia's chain id; the anvil chain reports it.
pub const CHAIN_ID: u64 = 84_532;
/// Base Sepolia's USDC address, where the registry expects USDC on this chain.
pub const USDC: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");
/// Confirmations the chain is configured with.
pub const CONFIRMATIONS: u64 = 2;
/// One whole USDC in base units.
pub const ONE_USDC: u64 = 1_000_000;

/// Which database a benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// A new SQLite file in a temporary directory.
    Sqlite,
    /// A new database on the PostgreSQL server, dropped afterwards.
    Postgres,
}

impl Backend {
    /// The name used in output.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Options every benchmark takes.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Database backend.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub backend: Backend,
    /// PostgreSQL server to create the benchmark database on (any database of it; needs the
    /// right to create databases).
    #[arg(
        long,
        env = "COFFER_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres_url: String,
    /// SQL to run on the new database after migrations and before measuring, e.g. to try an
    /// index.
    #[arg(long, value_name = "FILE")]
    pub setup_sql: Option<PathBuf>,
}

/// A fresh, migrated database and how to remove it.
struct Database {
    store: Arc<dyn Store>,
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Directory(PathBuf),
    Postgres { admin_url: String, name: String },
}

/// A throwaway database's secrets are sealed with a throwaway key.
fn bench_sealer() -> coffer_store::Sealer {
    coffer_store::Sealer::new(coffer_store::MasterKey::generate().0)
}

fn unique_suffix() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    )
}

impl Database {
    async fn create(args: &DatabaseArgs) -> Result<Self> {
        match args.backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("coffer-bench-{}", unique_suffix()));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let url = format!("sqlite://{}/coffer.db", dir.display());
                let store = coffer_store::open(&url, bench_sealer()).await;
                match store {
                    Ok(store) => Ok(Database {
                        store,
                        url,
                        cleanup: Cleanup::Directory(dir),
                    }),
                    Err(error) => {
                        let _ = std::fs::remove_dir_all(&dir);
                        Err(error).context("opening the SQLite database")
                    }
                }
            }
            Backend::Postgres => {
                let admin_url = args.postgres_url.clone();
                let name = format!("coffer_bench_{}", unique_suffix());
                let mut admin =
                    sqlx::PgConnection::connect(&admin_url)
                        .await
                        .with_context(|| {
                            format!("connecting to {}", coffer_store::redact_url(&admin_url))
                        })?;
                sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .context("creating the benchmark database")?;
                let _ = admin.close().await;
                let base = admin_url
                    .rsplit_once('/')
                    .map_or(admin_url.as_str(), |(base, _)| base);
                let cleanup = Cleanup::Postgres {
                    admin_url: admin_url.clone(),
                    name: name.clone(),
                };
                let url = format!("{base}/{name}");
                match coffer_store::open(&url, bench_sealer()).await {
                    Ok(store) => Ok(Database {
                        store,
                        url,
                        cleanup,
                    }),
                    Err(error) => {
                        Database::remove_quietly(cleanup).await;
                        Err(error).context("opening the PostgreSQL database")
                    }
                }
            }
        }
    }

    /// Runs the SQL in `file` on the database.
    async fn execute_file(&self, file: &std::path::Path) -> Result<()> {
        let sql =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let context = || format!("running {}", file.display());
        if self.url.starts_with("sqlite") {
            let mut connection = sqlx::SqliteConnection::connect(&self.url).await?;
            sqlx::raw_sql(&sql)
                .execute(&mut connection)
                .await
                .with_context(context)?;
            connection.close().await?;
        } else {
            let mut connection = sqlx::PgConnection::connect(&self.url).await?;
            sqlx::raw_sql(&sql)
                .execute(&mut connection)
                .await
                .with_context(context)?;
            connection.close().await?;
        }
        Ok(())
    }

    async fn remove(self) {
        drop(self.store);
        Database::remove_quietly(self.cleanup).await;
    }

    async fn remove_quietly(cleanup: Cleanup) {
        match cleanup {
            Cleanup::Directory(dir) => {
                if let Err(error) = std::fs::remove_dir_all(&dir) {
                    eprintln!("warning: could not remove {}: {error}", dir.display());
                }
            }
            Cleanup::Postgres { admin_url, name } => {
                let dropped = async {
                    let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await?;
                    admin.close().await
                };
                if let Err(error) = dropped.await {
                    eprintln!("warning: could not drop database {name}: {error}");
                }
            }
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn interrupted() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}

/// Runs `body` on a fresh database and removes the database afterwards, also when the body
/// fails or the process is interrupted.
pub async fn with_database<F, Fut>(args: &DatabaseArgs, body: F) -> Result<()>
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let database = Database::create(args).await?;
    let result = tokio::select! {
        result = async {
            if let Some(file) = &args.setup_sql {
                database.execute_file(file).await?;
                eprintln!("applied {}", file.display());
            }
            body(database.store.clone()).await
        } => result,
        () = interrupted() => Err(anyhow!("interrupted")),
    };
    database.remove().await;
    result
}

/// The dev deposit key's xpub (`m/44'/60'/1'/0` of anvil's public mnemonic).
pub fn dev_xpub() -> Result<String> {
    Ok(coffer_evm::hd::dev_deposit_key(DEV_MNEMONIC)?.to_base58()?)
}

/// A throwaway anvil chain with the test USDC and a payer holding plenty of it.
pub struct Chain {
    anvil: Anvil,
    provider: DynProvider,
    payer: PrivateKeySigner,
    wallet: EthereumWallet,
    nonce: u64,
}

impl Chain {
    /// Starts anvil (from `.tools/bin/anvil` or `$COFFER_ANVIL`), installs USDC and funds the
    /// payer.
    pub async fn start() -> Result<Self> {
        let binary = anvil::locate_binary()
            .context("anvil not found: run scripts/install-tools.sh or set COFFER_ANVIL")?;
        let anvil = Anvil::start(&AnvilOptions {
            binary,
            chain_id: CHAIN_ID,
            port: 0,
            state_file: None,
            block_time: None,
        })
        .await?;
        let owner = testnet::dev_account(0)?;
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(owner.clone()))
            .connect_http(anvil.url().parse()?)
            .erased();
        let spec = UsdcSpec {
            name: "USDC".into(),
            version: "2".into(),
            symbol: "USDC".into(),
            decimals: 6,
            owner: owner.address(),
        };
        testnet::install_usdc_at(&provider, USDC, &spec).await?;
        let payer = testnet::dev_account(1)?;
        testnet::mint(
            &provider,
            USDC,
            payer.address(),
            U256::from(1_000_000_000u64 * ONE_USDC),
        )
        .await?;
        let nonce = provider.get_transaction_count(payer.address()).await?;
        Ok(Chain {
            anvil,
            provider,
            wallet: EthereumWallet::from(payer.clone()),
            payer,
            nonce,
        })
    }

    /// A provider signing as the chain's owner (the token's minter).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The RPC URL.
    pub fn url(&self) -> &str {
        self.anvil.url()
    }

    /// Mines `blocks` blocks at once.
    pub async fn mine(&self, blocks: u64) -> Result<()> {
        self.provider.anvil_mine(Some(blocks), None).await?;
        Ok(())
    }

    /// Turns mining a block per transaction on or off.
    pub async fn set_automine(&self, enabled: bool) -> Result<()> {
        self.provider.anvil_set_auto_mine(enabled).await?;
        Ok(())
    }

    /// Sends a USDC transfer from the payer without waiting for it to be mined.
    pub async fn send_transfer(&mut self, to: Address, units: u64) -> Result<TxHash> {
        let request = TransactionRequest::default()
            .with_from(self.payer.address())
            .with_to(USDC)
            .with_input(
                IERC20::transferCall {
                    to,
                    value: U256::from(units),
                }
                .abi_encode(),
            )
            .with_nonce(self.nonce)
            .with_chain_id(CHAIN_ID)
            .with_gas_limit(100_000)
            .with_max_fee_per_gas(20_000_000_000)
            .with_max_priority_fee_per_gas(1_000_000_000);
        let envelope = request.build(&self.wallet).await?;
        let pending = self
            .provider
            .send_raw_transaction(&envelope.encoded_2718())
            .await?;
        self.nonce += 1;
        Ok(*pending.tx_hash())
    }

    /// Sends a USDC transfer and waits until it is mined (with automine on).
    pub async fn transfer(&mut self, to: Address, units: u64) -> Result<()> {
        let hash = self.send_transfer(to, units).await?;
        for _ in 0..200 {
            if let Some(receipt) = self.provider.get_transaction_receipt(hash).await? {
                if !receipt.status() {
                    bail!("transfer {hash} reverted");
                }
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        bail!("transfer {hash} was not mined within 2 s")
    }
}

/// Application state over `store` with base-sepolia served by `rpc_url`, two confirmations.
/// Webhooks may go to this machine (the benchmarks' endpoints are local).
pub fn app_state(store: Arc<dyn Store>, rpc_url: &str) -> Result<AppState> {
    let mut registry = ChainRegistry::builtin();
    let mut overrides = BTreeMap::new();
    overrides.insert(
        "base-sepolia".to_owned(),
        ChainOverride {
            rpc_urls: vec![rpc_url.to_owned()],
            confirmations: Some(CONFIRMATIONS),
            ..Default::default()
        },
    );
    registry.apply(&overrides)?;
    Ok(AppState::new(store, registry, "http://127.0.0.1")?
        .with_outbound_policy(coffer_gateway::outbound::OutboundPolicy::allowing_loopback()))
}

/// A merchant with the dev deposit wallet on every chain.
pub async fn merchant(state: &AppState, webhook_url: Option<&str>) -> Result<MerchantRow> {
    let merchant = state.gateway.merchants.create("Bench", webhook_url).await?;
    state
        .gateway
        .store
        .set_wallet(
            &merchant.id,
            0,
            &dev_xpub()?,
            chrono::Utc::now().timestamp_millis(),
        )
        .await?;
    Ok(merchant)
}
