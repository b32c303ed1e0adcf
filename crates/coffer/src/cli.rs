//! The `coffer` commands.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use coffer_core::MerchantId;
use coffer_server::merchants::{MerchantError, Merchants};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::config::{Config, EXAMPLE};
use crate::dev::{self, DevArgs};
use crate::serve::{self, Application, StartError};
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
    /// Run everything locally: two anvil chains with test tokens, funded payers, a demo
    /// merchant, and the server.
    Dev(DevArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage merchants.
    Merchant {
        /// What to do with merchants.
        #[command(subcommand)]
        action: MerchantAction,
    },
    /// Manage API keys.
    Key {
        /// What to do with keys.
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Manage OKX-style API credentials (for the `/api/v6/…/x402` facilitator endpoints).
    OkxKey {
        /// What to do with OKX credentials.
        #[command(subcommand)]
        action: OkxKeyAction,
    },
    /// Manage GatePay-style API credentials (ClientId and secret, for `/v1/pay/…`).
    GatepayKey {
        /// What to do with GatePay credentials.
        #[command(subcommand)]
        action: GatePayKeyAction,
    },
    /// Manage merchants' deposit wallets (extended public keys).
    Wallet {
        /// What to do with wallets.
        #[command(subcommand)]
        action: WalletAction,
    },
    /// Manage merchants' x402 payTo addresses: settlements paid to one are recorded as the
    /// merchant's orders (with a payment and webhooks).
    Payto {
        /// What to do with payTo addresses.
        #[command(subcommand)]
        action: PayToAction,
    },
    /// Write encrypted keystores of x402 settlement signers (for `x402.signer_keystores`).
    Signer {
        /// What to do with signers.
        #[command(subcommand)]
        action: SignerAction,
    },
    /// Work with the master key that encrypts secrets at rest (webhook, GatePay and OKX
    /// secrets): make one, rotate it, see how the stored secrets are encrypted.
    Secrets {
        /// What to do with the master key.
        #[command(subcommand)]
        action: crate::master_key::SecretsAction,
    },
    /// Work with configuration.
    Config {
        /// What to do with configuration.
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// `coffer merchant …`.
#[derive(Debug, Subcommand)]
pub enum MerchantAction {
    /// Create a merchant; prints its id and webhook secret.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Default webhook endpoint.
        #[arg(long)]
        webhook_url: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List merchants.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `coffer key …`.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Create an API key for a merchant; the key is printed once and never stored.
    Create {
        /// The merchant's id (`mer_…`).
        #[arg(long)]
        merchant: String,
        /// A label to recognise the key by.
        #[arg(long, default_value = "")]
        label: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List API keys (ids and labels, never the keys).
    List {
        /// Only this merchant's keys.
        #[arg(long)]
        merchant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key by id (`ck_…`); it stops working at once.
    Revoke {
        /// The key's id, as shown by `coffer key list`.
        id: String,
    },
}

/// `coffer okx-key …`.
#[derive(Debug, Subcommand)]
pub enum OkxKeyAction {
    /// Create a credential; the secret and passphrase are printed once.
    Create {
        /// The merchant's id (`mer_…`).
        #[arg(long)]
        merchant: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a credential by its access key; it stops working at once.
    Revoke {
        /// The `OK-ACCESS-KEY`.
        access_key: String,
    },
}

/// `coffer gatepay-key …`.
#[derive(Debug, Subcommand)]
pub enum GatePayKeyAction {
    /// Create a credential; the secret is printed once.
    Create {
        /// The merchant's id (`mer_…`).
        #[arg(long)]
        merchant: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a credential by its ClientId; it stops working at once.
    Revoke {
        /// The `X-GatePay-Certificate-ClientId`.
        client_id: String,
    },
}

/// `coffer wallet …`.
#[derive(Debug, Subcommand)]
pub enum WalletAction {
    /// Set the extended public key (`xpub…`, e.g. of `m/44'/60'/0'/0`) whose children become
    /// deposit addresses; watch-only, Coffer never needs the private key.
    Set {
        /// The merchant's id (`mer_…`).
        #[arg(long)]
        merchant: String,
        /// The extended public key.
        #[arg(long)]
        xpub: String,
        /// Only for this chain (a key such as `base`); default: every EVM chain.
        #[arg(long)]
        chain: Option<String>,
    },
}

/// `coffer payto …`.
#[derive(Debug, Subcommand)]
pub enum PayToAction {
    /// Register an address as the merchant's x402 payTo on a chain.
    Add {
        /// The merchant's id (`mer_…`).
        #[arg(long)]
        merchant: String,
        /// The chain (a key such as `base-sepolia`, a CAIP-2 id, or a slug).
        #[arg(long)]
        chain: String,
        /// The address (0x…).
        #[arg(long)]
        address: String,
    },
    /// Unregister an address.
    Remove {
        /// The merchant's id (`mer_…`).
        #[arg(long)]
        merchant: String,
        /// The chain.
        #[arg(long)]
        chain: String,
        /// The address (0x…).
        #[arg(long)]
        address: String,
    },
    /// List a merchant's payTo addresses.
    List {
        /// The merchant's id (`mer_…`).
        #[arg(long)]
        merchant: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `coffer signer …`. The password comes from `--password-file`, else from the configured
/// `x402.signer_keystore_password_file`, else from the environment variable named by
/// `x402.signer_keystore_password_env` (`COFFER_SIGNER_KEYSTORE_PASSWORD`): never from the
/// command line, where other users and shell history could read it.
#[derive(Debug, Subcommand)]
pub enum SignerAction {
    /// Create a new random settlement key in an encrypted V3 JSON keystore; prints its
    /// address (fund it with gas, then add the file to `x402.signer_keystores`).
    New {
        /// The keystore file to write (it must not exist).
        #[arg(long, value_name = "PATH")]
        keystore: PathBuf,
        /// A file whose first line is the password.
        #[arg(long, value_name = "PATH")]
        password_file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Encrypt an existing private key, read from standard input (0x hex), into a V3 JSON
    /// keystore; prints its address.
    Import {
        /// The keystore file to write (it must not exist).
        #[arg(long, value_name = "PATH")]
        keystore: PathBuf,
        /// A file whose first line is the password.
        #[arg(long, value_name = "PATH")]
        password_file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `coffer config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print a commented configuration template.
    Example,
    /// Validate the configuration (file and environment) and print the result.
    Check,
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// One line for stderr.
    pub message: String,
    /// 2 for configuration errors, 1 otherwise.
    pub exit_code: u8,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            exit_code: 1,
        }
    }
}

impl From<crate::config::ConfigError> for Failure {
    fn from(error: crate::config::ConfigError) -> Self {
        Failure {
            message: format!("invalid configuration: {error}"),
            exit_code: 2,
        }
    }
}

impl From<StartError> for Failure {
    fn from(error: StartError) -> Self {
        match error {
            StartError::Config(error) => error.into(),
            other => Failure::new(other.to_string()),
        }
    }
}

impl From<MerchantError> for Failure {
    fn from(error: MerchantError) -> Self {
        Failure::new(error.to_string())
    }
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
        action: ConfigAction::Example,
    } = cli.command
    {
        print!("{EXAMPLE}");
        return Ok(());
    }
    let config = Config::load(path.as_deref())?;
    telemetry::init(&config.log);
    match cli.command {
        Command::Config {
            action: ConfigAction::Example,
        } => Ok(()),
        Command::Config {
            action: ConfigAction::Check,
        } => {
            let shown = config.redacted();
            let text = toml::to_string_pretty(&shown).map_err(|e| Failure::new(e.to_string()))?;
            println!("# configuration is valid\n{text}");
            Ok(())
        }
        Command::Serve => {
            let shutdown = serve::shutdown_signal();
            let app = Application::build(&config).await?;
            tracing::info!(address = %app.address(), backend = app.state().store.backend(), "coffer is listening");
            app.run_until(shutdown).await?;
            Ok(())
        }
        Command::Dev(args) => dev::run(config, args).await,
        Command::Migrate => {
            let store = open_store(&config).await?;
            println!("database is up to date ({})", store.backend());
            Ok(())
        }
        Command::Merchant { action } => merchant_command(&config, action).await,
        Command::Key { action } => key_command(&config, action).await,
        Command::Wallet { action } => wallet_command(&config, action).await,
        Command::OkxKey { action } => okx_key_command(&config, action).await,
        Command::GatepayKey { action } => gatepay_key_command(&config, action).await,
        Command::Payto { action } => pay_to_command(&config, action).await,
        Command::Signer { action } => signer_command(&config, action),
        Command::Secrets { action } => crate::master_key::command(&config, action).await,
    }
}

/// Opens the configured database with the configured master key (or none).
///
/// # Errors
/// [`Failure`] naming the database (password removed) or the key.
pub(crate) async fn open_store(
    config: &Config,
) -> Result<std::sync::Arc<dyn coffer_store::Store>, Failure> {
    coffer_store::open(&config.database.url, config.secrets.sealer()?)
        .await
        .map_err(|error| {
            Failure::new(format!(
                "database {}: {error}",
                coffer_store::redact_url(&config.database.url)
            ))
        })
}

fn parse_merchant(text: &str) -> Result<MerchantId, Failure> {
    MerchantId::parse(text).map_err(|error| Failure::new(format!("--merchant: {error}")))
}

pub(crate) fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

async fn merchant_command(config: &Config, action: MerchantAction) -> Result<(), Failure> {
    let merchants = Merchants::new(open_store(config).await?)
        .with_outbound_policy(std::sync::Arc::new(config.outbound.policy()?));
    match action {
        MerchantAction::Create {
            name,
            webhook_url,
            json,
        } => {
            let merchant = merchants
                .create(&name, webhook_url.as_deref())
                .await
                .map_err(|error| match error {
                    MerchantError::UrlNotAllowed { refusal, .. } => {
                        Failure::new(format!("--webhook-url: {refusal}"))
                    }
                    other => other.into(),
                })?;
            if json {
                print_json(&json!({
                    "id": merchant.id,
                    "name": merchant.name,
                    "webhook_url": merchant.webhook_url,
                    "webhook_secret": merchant.webhook_secret,
                }));
            } else {
                println!("created merchant {} ({})", merchant.id, merchant.name);
                println!("webhook secret: {}", merchant.webhook_secret);
                println!("next: coffer key create --merchant {}", merchant.id);
            }
        }
        MerchantAction::List { json } => {
            let all = merchants.list().await?;
            if json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|m| json!({"id": m.id, "name": m.name, "webhook_url": m.webhook_url, "created_at": m.created_at}))
                    .collect();
                print_json(&json!(rows));
            } else {
                println!("{:<22} {:<25} {:<32} NAME", "ID", "CREATED", "WEBHOOK");
                for m in all {
                    let created = m.created_at.to_rfc3339_opts(chrono_secs(), true);
                    println!(
                        "{:<22} {:<25} {:<32} {}",
                        m.id,
                        created,
                        m.webhook_url.as_deref().unwrap_or("-"),
                        m.name
                    );
                }
            }
        }
    }
    Ok(())
}

fn chrono_secs() -> chrono::SecondsFormat {
    chrono::SecondsFormat::Secs
}

async fn key_command(config: &Config, action: KeyAction) -> Result<(), Failure> {
    let merchants = Merchants::new(open_store(config).await?);
    match action {
        KeyAction::Create {
            merchant,
            label,
            json,
        } => {
            let merchant = parse_merchant(&merchant)?;
            let created =
                merchants
                    .create_key(&merchant, &label)
                    .await
                    .map_err(|error| match error {
                        MerchantError::Store(coffer_store::StoreError::NotFound(_)) => {
                            Failure::new(format!("--merchant: no merchant {merchant}"))
                        }
                        other => other.into(),
                    })?;
            if json {
                print_json(
                    &json!({"id": created.row.id, "merchant_id": merchant, "label": created.row.label, "key": created.key.expose_secret()}),
                );
            } else {
                println!("created API key {} for {merchant}", created.row.id);
                println!("key: {}", created.key.expose_secret());
                println!("store it now: Coffer keeps only its hash and cannot show it again");
            }
        }
        KeyAction::List { merchant, json } => {
            let merchant = merchant.as_deref().map(parse_merchant).transpose()?;
            let keys = merchants.keys(merchant.as_ref()).await?;
            if json {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| json!({"id": k.id, "merchant_id": k.merchant_id, "label": k.label, "created_at": k.created_at, "revoked_at": k.revoked_at}))
                    .collect();
                print_json(&json!(rows));
            } else {
                println!("{:<16} {:<22} {:<8} LABEL", "ID", "MERCHANT", "STATE");
                for k in keys {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<16} {:<22} {:<8} {}",
                        k.id, k.merchant_id, state, k.label
                    );
                }
            }
        }
        KeyAction::Revoke { id } => {
            let row = merchants
                .revoke_key(&id)
                .await
                .map_err(|error| match error {
                    MerchantError::Store(coffer_store::StoreError::NotFound(_)) => {
                        Failure::new(format!("no API key {id}"))
                    }
                    other => other.into(),
                })?;
            println!("revoked API key {} of {}", row.id, row.merchant_id);
        }
    }
    Ok(())
}

async fn wallet_command(config: &Config, action: WalletAction) -> Result<(), Failure> {
    match action {
        WalletAction::Set {
            merchant,
            xpub,
            chain,
        } => {
            let merchant = parse_merchant(&merchant)?;
            let key = coffer_evm::hd::DepositKey::parse(&xpub)
                .map_err(|error| Failure::new(format!("--xpub: {error}")))?;
            let chain_id = match chain.as_deref() {
                None => 0,
                Some(name) => config
                    .registry()?
                    .by_name(name)
                    .map(|chain| chain.chain_id)
                    .ok_or_else(|| Failure::new(format!("--chain: unknown chain {name:?}")))?,
            };
            let store = open_store(config).await?;
            store
                .merchant(&merchant)
                .await
                .map_err(|error| match error {
                    coffer_store::StoreError::NotFound(_) => {
                        Failure::new(format!("--merchant: no merchant {merchant}"))
                    }
                    other => Failure::new(other.to_string()),
                })?;
            let now = chrono::Utc::now().timestamp_millis();
            let wallet = store
                .set_wallet(&merchant, chain_id, &xpub, now)
                .await
                .map_err(|error| Failure::new(error.to_string()))?;
            let first = key
                .address(wallet.next_index)
                .map_err(|error| Failure::new(error.to_string()))?;
            let scope = chain.as_deref().unwrap_or("every EVM chain");
            println!("deposit wallet set for {merchant} on {scope}; next deposit address {first}");
        }
    }
    Ok(())
}

async fn okx_key_command(config: &Config, action: OkxKeyAction) -> Result<(), Failure> {
    let credentials = coffer_server::okx::OkxCredentials::new(open_store(config).await?);
    match action {
        OkxKeyAction::Create { merchant, json } => {
            let merchant = parse_merchant(&merchant)?;
            let created = credentials
                .create(&merchant)
                .await
                .map_err(|error| match error {
                    coffer_store::StoreError::NotFound(_) => {
                        Failure::new(format!("--merchant: no merchant {merchant}"))
                    }
                    other => Failure::new(other.to_string()),
                })?;
            let secret = coffer_server::okx::expose(&created.secret);
            let passphrase = coffer_server::okx::expose(&created.passphrase);
            if json {
                print_json(
                    &json!({"access_key": created.access_key, "secret": secret, "passphrase": passphrase, "merchant_id": merchant}),
                );
            } else {
                println!("OK-ACCESS-KEY        {}", created.access_key);
                println!("secret (signing)     {secret}");
                println!("OK-ACCESS-PASSPHRASE {passphrase}");
                println!("store them now: the secret and passphrase are not shown again");
            }
        }
        OkxKeyAction::Revoke { access_key } => {
            credentials
                .revoke(&access_key)
                .await
                .map_err(|_| Failure::new(format!("no OKX credential {access_key}")))?;
            println!("revoked OKX credential {access_key}");
        }
    }
    Ok(())
}

async fn gatepay_key_command(config: &Config, action: GatePayKeyAction) -> Result<(), Failure> {
    let credentials = coffer_server::gatepay::GatePayCredentials::new(open_store(config).await?);
    match action {
        GatePayKeyAction::Create { merchant, json } => {
            let merchant = parse_merchant(&merchant)?;
            let created = credentials
                .create(&merchant)
                .await
                .map_err(|error| match error {
                    coffer_store::StoreError::NotFound(_) => {
                        Failure::new(format!("--merchant: no merchant {merchant}"))
                    }
                    other => Failure::new(other.to_string()),
                })?;
            let secret = secrecy::ExposeSecret::expose_secret(&created.secret);
            if json {
                print_json(
                    &json!({"client_id": created.client_id, "secret": secret, "merchant_id": merchant}),
                );
            } else {
                println!("X-GatePay-Certificate-ClientId {}", created.client_id);
                println!("secret (HMAC-SHA512)           {secret}");
                println!("store it now: the secret is not shown again");
            }
        }
        GatePayKeyAction::Revoke { client_id } => {
            credentials
                .revoke(&client_id)
                .await
                .map_err(|_| Failure::new(format!("no GatePay credential {client_id}")))?;
            println!("revoked GatePay credential {client_id}");
        }
    }
    Ok(())
}

fn signer_command(config: &Config, action: SignerAction) -> Result<(), Failure> {
    use alloy::signers::local::PrivateKeySigner;
    let (keystore, password_file, json, imported) = match action {
        SignerAction::New {
            keystore,
            password_file,
            json,
        } => (keystore, password_file, json, None),
        SignerAction::Import {
            keystore,
            password_file,
            json,
        } => (keystore, password_file, json, Some(read_private_key()?)),
    };
    if keystore.exists() {
        return Err(Failure::new(format!(
            "--keystore: {} exists; Coffer never overwrites a keystore",
            keystore.display()
        )));
    }
    let mut source = config.x402.clone();
    if password_file.is_some() {
        source.signer_keystore_password_file = password_file;
    }
    let password = source.keystore_password()?;
    let name = keystore
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| Failure::new("--keystore: name a file"))?;
    let dir = keystore
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|error| Failure::new(format!("--keystore: {}: {error}", dir.display())))?;
    let key = imported.unwrap_or_else(PrivateKeySigner::random);
    let (signer, _uuid) = PrivateKeySigner::encrypt_keystore(
        dir,
        &mut rand_08::thread_rng(),
        key.to_bytes(),
        password.expose_secret().as_bytes(),
        Some(name),
    )
    .map_err(|error| Failure::new(format!("--keystore: {}: {error}", keystore.display())))?;
    restrict_to_owner(&keystore)?;
    let address = signer.address().to_checksum(None);
    if json {
        print_json(&json!({"address": address, "keystore": keystore}));
    } else {
        println!("wrote {}: settlement signer {address}", keystore.display());
        println!("next: fund it with gas and add the file to x402.signer_keystores");
    }
    Ok(())
}

async fn pay_to_command(config: &Config, action: PayToAction) -> Result<(), Failure> {
    let registry = config.registry()?;
    let chain_of = |name: &str| {
        registry
            .by_name(name)
            .or_else(|| registry.by_caip2(name))
            .map(|chain| (chain.chain_id, chain.key().to_owned()))
            .ok_or_else(|| Failure::new(format!("--chain: unknown chain {name:?}")))
    };
    let address_of = |text: &str| {
        text.parse::<alloy::primitives::Address>()
            .map_err(|_| Failure::new(format!("--address: {text:?} is not a 0x address")))
    };
    let store = open_store(config).await?;
    match action {
        PayToAction::Add {
            merchant,
            chain,
            address,
        } => {
            let merchant = parse_merchant(&merchant)?;
            let (chain_id, key) = chain_of(&chain)?;
            let address = address_of(&address)?;
            store
                .merchant(&merchant)
                .await
                .map_err(|error| match error {
                    coffer_store::StoreError::NotFound(_) => {
                        Failure::new(format!("--merchant: no merchant {merchant}"))
                    }
                    other => Failure::new(other.to_string()),
                })?;
            let row = coffer_store::PayToRow {
                chain_id,
                address: format!("{address:#x}"),
                merchant_id: merchant.clone(),
                created_at_ms: chrono::Utc::now().timestamp_millis(),
            };
            store.add_pay_to(&row).await.map_err(|error| match error {
                coffer_store::StoreError::Conflict(_) => Failure::new(format!(
                    "--address: {address} is another merchant's payTo on {key}"
                )),
                other => Failure::new(other.to_string()),
            })?;
            println!("x402 payTo {address} on {key} now records sales for {merchant}");
        }
        PayToAction::Remove {
            merchant,
            chain,
            address,
        } => {
            let merchant = parse_merchant(&merchant)?;
            let (chain_id, key) = chain_of(&chain)?;
            let address = address_of(&address)?;
            store
                .remove_pay_to(&merchant, chain_id, &format!("{address:#x}"))
                .await
                .map_err(|_| Failure::new(format!("{merchant} has no payTo {address} on {key}")))?;
            println!("removed x402 payTo {address} on {key}");
        }
        PayToAction::List { merchant, json } => {
            let merchant = parse_merchant(&merchant)?;
            let rows = store
                .pay_tos(&merchant)
                .await
                .map_err(|error| Failure::new(error.to_string()))?;
            let named: Vec<(String, String)> = rows
                .iter()
                .map(|row| {
                    let chain = registry
                        .by_chain_id(row.chain_id)
                        .map_or_else(|| row.chain_id.to_string(), |c| c.key().to_owned());
                    let address = row
                        .address
                        .parse::<alloy::primitives::Address>()
                        .map_or_else(|_| row.address.clone(), |a| a.to_checksum(None));
                    (chain, address)
                })
                .collect();
            if json {
                let list: Vec<_> = named
                    .iter()
                    .map(|(chain, address)| json!({"chain": chain, "address": address}))
                    .collect();
                print_json(&json!(list));
            } else {
                for (chain, address) in named {
                    println!("{chain:<20} {address}");
                }
            }
        }
    }
    Ok(())
}

/// Reads one private key (0x hex) from standard input.
fn read_private_key() -> Result<alloy::signers::local::PrivateKeySigner, Failure> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("private key (0x hex): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|error| Failure::new(format!("cannot read the private key: {error}")))?;
    let key = line.trim().parse();
    line.clear();
    key.map_err(|_| Failure::new("standard input: not a 32-byte hex private key"))
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|error| Failure::new(format!("--keystore: {}: {error}", path.display())))
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> Result<(), Failure> {
    Ok(())
}
