//! Configuration: defaults < TOML file < `COFFER__…` environment variables.
//!
//! Environment variables use `__` between levels: `COFFER__SERVER__LISTEN=0.0.0.0:8080`,
//! `COFFER__DATABASE__URL=postgres://…`,
//! `COFFER__CHAINS__BASE_SEPOLIA__RPC_URLS='["https://sepolia.base.org"]'`. In chain keys an
//! underscore stands for a hyphen, since variable names cannot hold one.
//!
//! [`Config::load`] reports the first problem as one message naming the key, e.g.
//! `server.listen: invalid socket address syntax`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use coffer_core::{ChainOverride, ChainRegistry};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server.
    pub server: ServerConfig,
    /// Storage.
    pub database: DatabaseConfig,
    /// Logging.
    pub log: LogConfig,
    /// The x402 facilitator.
    pub x402: X402Config,
    /// Chains: RPC URLs and registry overrides, by chain key.
    pub chains: BTreeMap<String, ChainOverride>,
    /// Fiat-priced orders.
    pub fiat: FiatConfig,
    /// The x402 paywall.
    pub paywall: PaywallConfig,
    /// Where webhooks and callbacks may go.
    pub outbound: OutboundConfig,
    /// The master key that encrypts secrets at rest.
    pub secrets: SecretsConfig,
}

/// `[secrets]`: the master key that encrypts webhook, GatePay and OKX secrets and payout wallet
/// keys in the database.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// A file holding the master key (32 bytes as base64 or hex, as `coffer secrets
    /// generate-key` prints it). It must not be accessible to other users. Without it, the
    /// key comes from the environment variable `COFFER_MASTER_KEY`.
    pub master_key_file: Option<PathBuf>,
}

/// The environment variable that may hold the master key (base64 or hex of 32 bytes).
pub const MASTER_KEY_ENV: &str = "COFFER_MASTER_KEY";

/// What to do when secrets need a master key and none is configured.
pub const MASTER_KEY_HELP: &str = "make one with `(umask 077; coffer secrets generate-key > master.key)` \
     and set secrets.master_key_file = \"master.key\" (or put the key in COFFER_MASTER_KEY)";

impl SecretsConfig {
    /// The master key: from `master_key_file`, else from `COFFER_MASTER_KEY`; `None` when
    /// neither is set. Never logged.
    ///
    /// # Errors
    /// [`ConfigError`] when both are set, the file is missing, accessible to other users, or
    /// does not hold a key.
    pub fn master_key(&self) -> Result<Option<coffer_store::MasterKey>, ConfigError> {
        let from_env = std::env::var(MASTER_KEY_ENV)
            .ok()
            .filter(|text| !text.trim().is_empty());
        match (&self.master_key_file, from_env) {
            (Some(_), Some(_)) => Err(ConfigError(format!(
                "secrets.master_key_file: {MASTER_KEY_ENV} is set too; give the master key one way"
            ))),
            (Some(path), None) => read_master_key_file(path)
                .map(Some)
                .map_err(|error| ConfigError(format!("secrets.master_key_file: {error}"))),
            (None, Some(text)) => coffer_store::MasterKey::parse(&text)
                .map(Some)
                .map_err(|error| ConfigError(format!("{MASTER_KEY_ENV}: {error}"))),
            (None, None) => Ok(None),
        }
    }

    /// A [`coffer_store::Sealer`] with the configured key (or none).
    ///
    /// # Errors
    /// As [`SecretsConfig::master_key`].
    pub fn sealer(&self) -> Result<coffer_store::Sealer, ConfigError> {
        Ok(self
            .master_key()?
            .map_or_else(coffer_store::Sealer::none, coffer_store::Sealer::new))
    }
}

/// Reads a master key file, refusing one that other users can read or change.
///
/// # Errors
/// A message naming the file: missing, accessible to others (with the `chmod` to fix it),
/// or not a key.
pub fn read_master_key_file(path: &Path) -> Result<coffer_store::MasterKey, String> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    if !metadata.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let mode = metadata.permissions().mode() & 0o777;
    // Group read is allowed (a service group); anything for other users, or group write, is not.
    if mode & 0o027 != 0 {
        return Err(format!(
            "{} is accessible to other users (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    coffer_store::MasterKey::parse(&text).map_err(|error| format!("{}: {error}", path.display()))
}

/// `[outbound]`: where Coffer may send the webhooks and callbacks merchants ask for. Public
/// addresses only, unless listed here (see `coffer_gateway::outbound`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Host names Coffer may call whatever they resolve to: `hooks.internal`, `*.corp.example`
    /// (any name under it), or an IP address.
    pub allow_hosts: Vec<String>,
    /// Networks Coffer may call although they are private, loopback, link-local, …, in CIDR
    /// (`10.1.0.0/16`, `fd00:1::/64`).
    pub allow_networks: Vec<String>,
}

impl OutboundConfig {
    /// The outbound policy: public addresses, and whatever is listed.
    ///
    /// # Errors
    /// [`ConfigError`] naming the entry that does not parse (`outbound.allow_networks[1]: …`).
    pub fn policy(&self) -> Result<coffer_gateway::outbound::OutboundPolicy, ConfigError> {
        coffer_gateway::outbound::OutboundPolicy::strict()
            .with_allow_lists(&self.allow_hosts, &self.allow_networks)
            .map_err(|error| ConfigError(format!("outbound.{error}")))
    }
}

/// `[fiat]`: exchange rates for fiat-priced orders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FiatConfig {
    /// Fiat code → token symbol → fiat units per token, as decimal strings
    /// (`[fiat.rates.EUR] USDC = "0.92"`). Laid over the default table, which has USDC, USDT,
    /// USDT0, DAI, PYUSD and FDUSD at 1 USD.
    pub rates: BTreeMap<String, BTreeMap<String, String>>,
}

/// `[paywall]`: routes sold over x402, reverse-proxied to their upstream once paid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaywallConfig {
    /// `[[paywall.routes]]`.
    pub routes: Vec<coffer_server::paywall::PaywallRouteConfig>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Seconds to let requests in flight finish after a shutdown signal.
    pub shutdown_grace_seconds: u64,
    /// Seconds a readiness probe waits for each dependency.
    pub readiness_timeout_seconds: u64,
    /// Base URL customers and merchants reach Coffer at (for payment links); defaults to
    /// `http://<listen address>`.
    pub public_url: Option<String>,
    /// How often each chain's watcher asks its RPC for a new block, in milliseconds. A webhook
    /// leaves about half of this after the confirming block on average.
    pub watcher_poll_ms: u64,
    /// Seconds a client may take to send a request's headers (from connecting, or from the
    /// previous response); a slower one is disconnected.
    pub header_read_timeout_seconds: u64,
    /// Seconds a request may take, body and handler, before it is answered 408. Must exceed
    /// `x402.settle_timeout_seconds` plus the paywall's upstream timeout (60 s), and be at most
    /// 600.
    pub request_timeout_seconds: u64,
    /// Requests handled at once; more are answered 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Client connections held at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Connections held at once from one client address (an IPv6 address by its /64); more
    /// are closed. Behind a reverse proxy every client is the proxy: raise it there.
    pub max_connections_per_client: usize,
    /// Seconds a request's body may take to arrive; it is read before the request takes one of
    /// `max_concurrent_requests`, so a slow sender holds a connection, never a slot.
    pub body_read_timeout_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace_seconds: 30,
            readiness_timeout_seconds: 3,
            public_url: None,
            watcher_poll_ms: 50,
            header_read_timeout_seconds: 10,
            request_timeout_seconds: 120,
            max_concurrent_requests: 1024,
            max_connections: 4096,
            max_connections_per_client: 1024,
            body_read_timeout_seconds: 10,
        }
    }
}

/// The longest `server.request_timeout_seconds`: a paid request's claim on its payment lasts
/// longer than this, so it never lapses while the request is served.
const MAX_REQUEST_TIMEOUT_SECONDS: u64 = 600;

impl ServerConfig {
    fn validated_limits(&self, x402: &X402Config) -> Result<(), ConfigError> {
        let at_least_one = [
            (
                "header_read_timeout_seconds",
                self.header_read_timeout_seconds,
            ),
            (
                "max_concurrent_requests",
                u64::try_from(self.max_concurrent_requests).unwrap_or(u64::MAX),
            ),
            (
                "max_connections",
                u64::try_from(self.max_connections).unwrap_or(u64::MAX),
            ),
            (
                "max_connections_per_client",
                u64::try_from(self.max_connections_per_client).unwrap_or(u64::MAX),
            ),
            ("body_read_timeout_seconds", self.body_read_timeout_seconds),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(ConfigError(format!("server.{key}: must be at least 1")));
            }
        }
        // A paid request waits for the paywall's upstream, then for its settlement's receipt; a
        // Pelago payment waits for its receipt, then for its confirmations (as long again). A
        // timeout shorter than that would answer 408 to a request whose payment is settling.
        let settle = x402.settle_timeout_seconds;
        let longest_wait =
            settle.saturating_add(settle.max(coffer_server::paywall::UPSTREAM_TIMEOUT.as_secs()));
        if self.request_timeout_seconds <= longest_wait {
            return Err(ConfigError(format!(
                "server.request_timeout_seconds: must exceed {longest_wait} \
                 (x402.settle_timeout_seconds plus the longer of the paywall's 60 s upstream \
                 timeout and a Pelago payment's wait for its confirmations)"
            )));
        }
        if self.request_timeout_seconds > MAX_REQUEST_TIMEOUT_SECONDS {
            return Err(ConfigError(format!(
                "server.request_timeout_seconds: must be at most {MAX_REQUEST_TIMEOUT_SECONDS}"
            )));
        }
        Ok(())
    }

    /// The limits on requests this configuration sets.
    pub fn request_limits(&self) -> coffer_server::app::RequestLimits {
        coffer_server::app::RequestLimits {
            request_timeout: std::time::Duration::from_secs(self.request_timeout_seconds),
            max_concurrent_requests: self.max_concurrent_requests,
            body_read_timeout: std::time::Duration::from_secs(self.body_read_timeout_seconds),
        }
    }

    /// The limits on connections this configuration sets.
    pub fn connection_limits(&self) -> coffer_server::app::ConnectionLimits {
        coffer_server::app::ConnectionLimits {
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_seconds),
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
        }
    }
}

/// `[database]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite:<path>` (default `sqlite:coffer.db`) or `postgres://user@host/db`.
    pub url: String,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &coffer_store::redact_url(&self.url))
            .finish()
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite:coffer.db".to_owned(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `coffer=debug,tower_http=info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

/// `[x402]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct X402Config {
    /// Private keys (0x hex) of the accounts that settle payments; they pay the gas.
    pub signer_keys: SignerKeys,
    /// Encrypted Ethereum V3 JSON keystores of more settlement accounts (`coffer signer new`
    /// writes one). They are decrypted when the server starts.
    pub signer_keystores: Vec<PathBuf>,
    /// The environment variable holding the keystores' password.
    pub signer_keystore_password_env: String,
    /// A file holding the keystores' password (its first line); when set, it wins over the
    /// environment variable.
    pub signer_keystore_password_file: Option<PathBuf>,
    /// Seconds `/x402/settle` waits for a receipt before answering `settlement_pending`.
    pub settle_timeout_seconds: u64,
    /// The highest fee per gas Coffer pays for a settlement, in gwei.
    pub max_fee_gwei: u64,
    /// Milliseconds an idle signer waits for more settlements before sending. With 0,
    /// settlements still share one Multicall3 transaction when they arrive while the previous
    /// one is being sent.
    pub batch_window_ms: u64,
    /// The most settlements one transaction carries (1: no batching).
    pub max_batch: usize,
    /// Seconds without a receipt after which a settlement transaction is replaced with higher
    /// fees (same nonce).
    pub bump_after_seconds: u64,
    /// Seconds after which a settlement claimed but never signed (its process died) is taken
    /// over by the next settle of the same authorization.
    pub abandoned_claim_seconds: u64,
    /// `[x402.facilitator]`: who may use the facilitator routes, and how much.
    pub facilitator: coffer_gateway::facilitator_policy::FacilitatorPolicy,
}

impl Default for X402Config {
    fn default() -> Self {
        X402Config {
            signer_keys: SignerKeys::default(),
            signer_keystores: Vec::new(),
            signer_keystore_password_env: DEFAULT_PASSWORD_ENV.to_owned(),
            signer_keystore_password_file: None,
            settle_timeout_seconds: 10,
            max_fee_gwei: 500,
            batch_window_ms: 0,
            max_batch: 100,
            bump_after_seconds: 30,
            abandoned_claim_seconds: 30,
            facilitator: coffer_gateway::facilitator_policy::FacilitatorPolicy::default(),
        }
    }
}

/// The environment variable that holds the keystores' password unless configured otherwise.
pub const DEFAULT_PASSWORD_ENV: &str = "COFFER_SIGNER_KEYSTORE_PASSWORD";

impl X402Config {
    /// The signers given as raw keys, parsed (checked whenever the configuration loads).
    ///
    /// # Errors
    /// [`ConfigError`] naming the key that is not a private key.
    pub fn key_signers(&self) -> Result<Vec<alloy::signers::local::PrivateKeySigner>, ConfigError> {
        use secrecy::ExposeSecret;
        self.signer_keys
            .0
            .iter()
            .enumerate()
            .map(|(i, key)| {
                key.expose_secret().trim().parse().map_err(|_| {
                    ConfigError(format!(
                        "x402.signer_keys[{i}]: not a 32-byte hex private key"
                    ))
                })
            })
            .collect()
    }

    /// Every signer: the raw keys, then the keystores, decrypted (scrypt: about a tenth of a
    /// second each, so only the server and `coffer signer` do it).
    ///
    /// # Errors
    /// [`ConfigError`] naming the key or keystore at fault: a missing password, an unreadable
    /// file, or a password that does not decrypt it.
    pub fn signers(&self) -> Result<Vec<alloy::signers::local::PrivateKeySigner>, ConfigError> {
        let mut signers = self.key_signers()?;
        if self.signer_keystores.is_empty() {
            return Ok(signers);
        }
        let password = self.keystore_password()?;
        for (i, path) in self.signer_keystores.iter().enumerate() {
            signers
                .push(decrypt_keystore(path, &password).map_err(|error| {
                    ConfigError(format!("x402.signer_keystores[{i}]: {error}"))
                })?);
        }
        Ok(signers)
    }

    /// The keystores' password: the first line of `signer_keystore_password_file` when it is
    /// set, else the variable named by `signer_keystore_password_env`. Never logged.
    ///
    /// # Errors
    /// [`ConfigError`] naming where the password was looked for.
    pub fn keystore_password(&self) -> Result<secrecy::SecretString, ConfigError> {
        if let Some(file) = &self.signer_keystore_password_file {
            let text = std::fs::read_to_string(file).map_err(|error| {
                ConfigError(format!(
                    "x402.signer_keystore_password_file: cannot read {}: {error}",
                    file.display()
                ))
            })?;
            let password = text.lines().next().unwrap_or_default();
            if password.is_empty() {
                return Err(ConfigError(format!(
                    "x402.signer_keystore_password_file: {} is empty",
                    file.display()
                )));
            }
            return Ok(password.to_owned().into());
        }
        match std::env::var(&self.signer_keystore_password_env) {
            Ok(password) if !password.is_empty() => Ok(password.into()),
            _ => Err(ConfigError(format!(
                "x402.signer_keystore_password_env: the keystore password is not set: put it \
                 in the environment variable {} or name a file in \
                 x402.signer_keystore_password_file",
                self.signer_keystore_password_env
            ))),
        }
    }
}

/// Decrypts one V3 JSON keystore.
///
/// # Errors
/// A message naming the file: unreadable, not a keystore, or a wrong password.
pub fn decrypt_keystore(
    path: &Path,
    password: &secrecy::SecretString,
) -> Result<alloy::signers::local::PrivateKeySigner, String> {
    use secrecy::ExposeSecret;
    if !path.is_file() {
        return Err(format!("{}: no such keystore file", path.display()));
    }
    alloy::signers::local::PrivateKeySigner::decrypt_keystore(
        path,
        password.expose_secret().as_bytes(),
    )
    .map_err(|error| match error.to_string() {
        // eth-keystore's MacMismatch: the password derives a key whose MAC does not match.
        text if text.contains("Mac Mismatch") => format!(
            "{}: cannot decrypt: wrong password (or a damaged keystore)",
            path.display()
        ),
        text => format!("{}: not a usable V3 keystore: {text}", path.display()),
    })
}

/// Private keys that never print: `Debug` and serialization show `***`.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SignerKeys(pub Vec<secrecy::SecretString>);

impl std::fmt::Debug for SignerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[***; {}]", self.0.len())
    }
}

impl Serialize for SignerKeys {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|_| "***"))
    }
}

impl PartialEq for SignerKeys {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.expose_secret() == b.expose_secret())
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub(crate) String);

impl Config {
    /// Loads defaults, then `file` (if given; an explicitly named file must exist), then the
    /// environment, and validates the result.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad key.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed("COFFER__").split("__"))
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment.merge(env).extract().map_err(describe)?;
        config.normalized().validated()
    }

    /// Parses a TOML document on top of the defaults (no environment), for tests and
    /// `config check`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(describe)?;
        config.normalized().validated()
    }

    /// A copy safe to print (`coffer config check`): the database password and the secret
    /// parts of RPC and upstream URLs are removed; signer keys already print as `***`.
    pub fn redacted(&self) -> Config {
        let mut shown = self.clone();
        shown.database.url = coffer_store::redact_url(&shown.database.url);
        for chain in shown.chains.values_mut() {
            for url in &mut chain.rpc_urls {
                *url = coffer_core::redact::redact_url(url);
            }
        }
        if let Some(url) = &mut shown.server.public_url {
            *url = coffer_core::redact::redact_url(url);
        }
        for route in &mut shown.paywall.routes {
            route.upstream = coffer_core::redact::redact_url(&route.upstream);
        }
        shown
    }

    fn normalized(mut self) -> Self {
        self.chains = std::mem::take(&mut self.chains)
            .into_iter()
            .map(|(key, chain)| (key.replace('_', "-"), chain))
            .collect();
        self
    }

    fn validated(self) -> Result<Self, ConfigError> {
        let scheme = self
            .database
            .url
            .split_once(':')
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        if !matches!(
            scheme.as_deref(),
            Some("sqlite" | "postgres" | "postgresql")
        ) {
            return Err(ConfigError(format!(
                "database.url: unsupported scheme in {:?}: use sqlite:<path> or postgres://…",
                coffer_store::redact_url(&self.database.url)
            )));
        }
        if let Some(url) = &self.server.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError(
                "server.public_url: must be an http:// or https:// URL".to_owned(),
            ));
        }
        if self.server.watcher_poll_ms == 0 {
            return Err(ConfigError(
                "server.watcher_poll_ms: must be at least 1".to_owned(),
            ));
        }
        if self.server.readiness_timeout_seconds == 0 {
            return Err(ConfigError(
                "server.readiness_timeout_seconds: must be at least 1".to_owned(),
            ));
        }
        self.server.validated_limits(&self.x402)?;
        self.registry()?;
        self.x402.key_signers()?;
        self.x402.facilitator.validate().map_err(ConfigError)?;
        self.secrets.master_key()?;
        self.fiat_rates()?;
        self.outbound.policy()?;
        Ok(self)
    }

    /// The exchange-rate table: the defaults with `[fiat.rates]` laid over them.
    ///
    /// # Errors
    /// [`ConfigError`] naming the bad rate (`fiat.rates.EUR.USDC: …`).
    pub fn fiat_rates(&self) -> Result<coffer_gateway::fiat::FiatRates, ConfigError> {
        coffer_gateway::fiat::FiatRates::with_overrides(&self.fiat.rates).map_err(ConfigError)
    }

    /// The built-in chain registry with this configuration's chains applied.
    ///
    /// # Errors
    /// [`ConfigError`] naming the bad chain key.
    pub fn registry(&self) -> Result<ChainRegistry, ConfigError> {
        let mut registry = ChainRegistry::builtin();
        registry
            .apply(&self.chains)
            .map_err(|error| ConfigError(error.to_string()))?;
        Ok(registry)
    }
}

/// Turns figment's error into one line that starts with the dotted key.
fn describe(error: figment::Error) -> ConfigError {
    let key = error.path.join(".");
    let source = error
        .metadata
        .as_ref()
        .map(|meta| match &meta.source {
            Some(source) => format!(" (from {source})"),
            None => format!(" (from {})", meta.name),
        })
        .unwrap_or_default();
    let kind = error.kind.to_string();
    if key.is_empty() {
        ConfigError(format!("{kind}{source}"))
    } else {
        ConfigError(format!("{key}: {kind}{source}"))
    }
}

/// A commented configuration template, printed by `coffer config example`.
pub const EXAMPLE: &str = r#"# Coffer configuration. Every key is optional; the values shown are the defaults.
# Environment variables override this file: COFFER__<SECTION>__<KEY>, e.g.
#   COFFER__SERVER__LISTEN=0.0.0.0:8080
#   COFFER__DATABASE__URL=postgres://coffer@localhost/coffer
#   COFFER__CHAINS__BASE_SEPOLIA__RPC_URLS='["https://sepolia.base.org"]'

[server]
# Address and port to listen on.
listen = "127.0.0.1:8080"
# Seconds to let requests in flight finish after SIGINT/SIGTERM.
shutdown_grace_seconds = 30
# Seconds /readyz waits for the database and each chain's RPC.
readiness_timeout_seconds = 3
# Base URL for payment links; defaults to http://<listen>.
# public_url = "https://pay.example.com"
# Milliseconds between a chain watcher's polls for new blocks (one RPC request each when idle).
# A webhook leaves about half of this after the confirming block; raise it for rate-limited RPCs.
watcher_poll_ms = 50
# Seconds a client may take to send a request's headers; slower clients are disconnected.
header_read_timeout_seconds = 10
# Seconds a request may take (body and handler) before it is answered 408. Must exceed
# x402.settle_timeout_seconds + 60 (the paywall's upstream timeout) and be at most 600.
request_timeout_seconds = 120
# Requests handled at once; more are answered 503 with Retry-After.
max_concurrent_requests = 1024
# Client connections held at once; more wait until one closes.
max_connections = 4096
# Connections held at once from one client address (an IPv6 address by its /64). Behind a
# reverse proxy every client is the proxy: raise this (and limit clients at the proxy).
max_connections_per_client = 1024
# Seconds a request's body may take to arrive. Bodies are read before a request takes one of
# max_concurrent_requests, so a slow sender holds its connection, never a slot; then 408.
body_read_timeout_seconds = 10

[database]
# sqlite:<path> for one process (created if missing), or
# postgres://user:password@host:5432/dbname for several replicas.
url = "sqlite:coffer.db"

[log]
# "pretty" for people, "json" for log collectors.
format = "pretty"
# A tracing filter; RUST_LOG overrides it.
level = "info"

[x402]
# Private keys (0x hex) of the accounts that settle x402 payments and pay their gas.
# Prefer the environment: COFFER__X402__SIGNER_KEYS='["0x…"]'. They are never printed.
signer_keys = []
# Or, better, encrypted Ethereum V3 JSON keystores (write one with `coffer signer new` or
# `coffer signer import`), decrypted at start-up with one password, which is read from the
# environment variable named here, or from the first line of signer_keystore_password_file.
signer_keystores = []
signer_keystore_password_env = "COFFER_SIGNER_KEYSTORE_PASSWORD"
# signer_keystore_password_file = "/run/secrets/coffer-keystore-password"
# Seconds /x402/settle waits for a receipt before answering "settlement_pending" (with the hash).
settle_timeout_seconds = 10
# The highest fee per gas paid for a settlement, in gwei.
max_fee_gwei = 500
# Settlements that arrive while the signer is sending share its next transaction, a Multicall3
# aggregate3 (each call may fail on its own). An idle signer sends at once, or waits this many
# milliseconds for company first.
batch_window_ms = 0
# The most settlements one transaction carries; 1 turns batching off.
max_batch = 100
# A settlement transaction with no receipt after this many seconds is replaced by one with
# higher fees at the same nonce (up to max_fee_gwei).
bump_after_seconds = 30
# A settlement claimed but never signed (its process died before sending) is taken over by the
# next settle of the same authorization after this many seconds. Any value is safe: only one
# transaction can ever be journaled for a claim.
abandoned_claim_seconds = 30

# Who may use the facilitator routes (/x402/verify and /x402/settle, and OKX's): settling
# costs the signers' gas.
[x402.facilitator]
# "payto": only payments to payTo addresses registered in Coffer (`coffer payto add`);
# "api_key": callers with a merchant's API key, to that merchant's payTo addresses;
# "public": anyone, to anyone. A caller with an API key or OKX credential acts only for its
# own merchant except under "public".
access = "payto"
# The smallest payment verified or settled, in token units.
min_amount = "0.001"
# Requests per minute per payer (authorization.from) and per client (the calling merchant,
# else the peer address); 0 turns a limit off.
payer_per_minute = 30
client_per_minute = 600

# Chains. Coffer knows ethereum, base, base-sepolia, polygon, bsc, arbitrum, optimism,
# avalanche and x-layer with their USDC/USDT contracts; a chain is watched once it has RPC URLs.
# Several URLs give failover, tried in order.
#
# [chains.base]
# rpc_urls = ["https://mainnet.base.org", "https://base.llamarpc.com"]
# confirmations = 10
#
# Override or add an asset (a new asset needs address and decimals; an EIP-3009 token also
# needs its EIP-712 domain):
#
# [chains.base.assets.EURC]
# address = "0x60a3E35Cc302bFA44Cb288Bc5a4F316Fdb1adb42"
# decimals = 6
# transfer_method = "eip3009"   # or "erc20"
# eip712 = { name = "EURC", version = "2" }
#
# Add a chain Coffer does not know (chain_id is required):
#
# [chains.my-l2]
# chain_id = 424242
# rpc_urls = ["https://rpc.my-l2.example"]
# display_name = "My L2"
# native_symbol = "ETH"
# confirmations = 5

# Exchange rates for fiat-priced orders (fiat_currency + fiat_amount): fiat units per token.
# USDC, USDT, USDT0, DAI, PYUSD and FDUSD are 1 USD unless set here. The token amount is
# fiat_amount / rate, rounded up to the token's decimals; the rate is locked per order.
#
# [fiat.rates.EUR]
# USDC = "0.92"
# USDT = "0.92"

[secrets]
# Webhook secrets and the GatePay and OKX credential secrets are stored encrypted with a master
# key (32 random bytes, base64 or hex). Make one with
#   (umask 077; coffer secrets generate-key > master.key)
# and name the file here (it must not be readable by other users), or put the key itself in the
# environment variable COFFER_MASTER_KEY. Keep a copy: without it the secrets cannot be read.
# Rotate with `coffer secrets rotate --new-key-file NEW`.
# master_key_file = "/etc/coffer/master.key"

# The x402 paywall: sell any HTTP API per request. Requests to `path` answer 402 until paid;
# paid ones are proxied to `upstream` (path and query appended) and settled when it answers < 400.
#
# [[paywall.routes]]
# path = "/premium/*"            # an exact path, or a prefix ending in /*
# method = "GET"                 # any method when absent
# price = "0.01"                 # in token units
# networks = ["base-sepolia"]    # x402 v1 names or CAIP-2 ids
# assets = ["USDC"]              # EIP-3009 tokens, by symbol
# pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
# upstream = "http://127.0.0.1:9000"
# description = "Premium market data"
# mime_type = "application/json"
# max_timeout_seconds = 300

# Where Coffer may send the webhooks and callbacks merchants ask for (merchant endpoints, an
# order's webhook_url, a GatePay callbackUrl). Only public addresses unless listed here:
# loopback, private (10/8, 172.16/12, 192.168/16), link-local (169.254/16: cloud metadata),
# CGNAT, multicast, reserved, IPv6 unique-local and their IPv4-in-IPv6 forms are refused when a
# URL is set and again when it is called. Paywall upstreams and RPC URLs are not affected.
[outbound]
# Host names called whatever they resolve to: "hooks.internal", "*.corp.example", or an address.
allow_hosts = []
# Networks allowed although private, in CIDR: "10.1.0.0/16", "fd00:1::/64".
allow_networks = []
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(toml: &str) -> String {
        Config::from_toml(toml)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn the_example_is_valid_and_equals_the_defaults() {
        assert_eq!(Config::from_toml(EXAMPLE).ok(), Some(Config::default()));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        assert!(
            error_of("[server]\nlisten = \"nowhere\"").starts_with("server.listen: "),
            "{}",
            error_of("[server]\nlisten = \"nowhere\"")
        );
        assert!(error_of("[server]\nlisten = 5").starts_with("server.listen: "));
        assert!(error_of("[log]\nformat = \"xml\"").starts_with("log.format: "));
    }

    #[test]
    fn http_limits_are_checked_and_the_request_timeout_outlasts_a_paid_request() {
        for key in [
            "header_read_timeout_seconds",
            "max_concurrent_requests",
            "max_connections",
        ] {
            assert_eq!(
                error_of(&format!("[server]\n{key} = 0")),
                format!("server.{key}: must be at least 1")
            );
        }
        // A paid request waits up to 60 s for the upstream, then for the settlement's receipt.
        assert!(
            error_of("[server]\nrequest_timeout_seconds = 70")
                .starts_with("server.request_timeout_seconds: must exceed 70")
        );
        assert!(
            error_of(
                "[server]\nrequest_timeout_seconds = 100\n[x402]\nsettle_timeout_seconds = 40"
            )
            .starts_with("server.request_timeout_seconds: must exceed 100")
        );
        assert!(
            error_of("[server]\nrequest_timeout_seconds = 601")
                .starts_with("server.request_timeout_seconds: must be at most 600")
        );
        assert_eq!(error_of("[server]\nrequest_timeout_seconds = 71"), "");
    }

    #[test]
    fn an_unknown_key_is_named() {
        let error = error_of("[server]\nlisen = \"127.0.0.1:1\"");
        assert!(error.contains("lisen"), "{error}");
        assert!(error.starts_with("server"), "{error}");
    }

    #[test]
    fn outbound_allow_lists_are_parsed_and_a_bad_entry_is_named() {
        let config = Config::from_toml(
            "[outbound]\nallow_hosts = [\"hooks.internal\", \"*.corp.example\"]\n\
             allow_networks = [\"10.1.0.0/16\", \"fd00:1::/64\"]\n",
        )
        .expect("valid");
        assert_eq!(config.outbound.allow_networks.len(), 2);
        let policy = config.outbound.policy().expect("policy");
        assert!(policy.judge("10.1.2.3".parse().expect("ip")).is_ok());
        assert!(policy.judge("10.2.0.1".parse().expect("ip")).is_err());
        assert_eq!(
            error_of("[outbound]\nallow_networks = [\"10.1.0.0/16\", \"10.1/16\"]"),
            "outbound.allow_networks[1]: \"10.1/16\" is not a network such as 10.1.0.0/16"
        );
        assert!(
            error_of("[outbound]\nallow_hosts = [\"bad host\"]")
                .starts_with("outbound.allow_hosts[0]: ")
        );
    }

    #[test]
    fn an_unknown_database_scheme_is_refused() {
        assert!(
            error_of("[database]\nurl = \"mysql://x\"")
                .starts_with("database.url: unsupported scheme")
        );
    }

    #[test]
    fn chain_errors_name_the_chain() {
        assert_eq!(
            error_of("[chains.mystery]\nrpc_urls = [\"http://127.0.0.1:1\"]"),
            "chains.mystery.chain_id: required for a chain Coffer does not know"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn environment_overrides_the_file_and_underscores_stand_for_hyphens() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("coffer.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:9000\"\n[log]\nformat = \"json\"\n",
        )
        .expect("write");
        figment::Jail::expect_with(|jail| {
            jail.set_env("COFFER__SERVER__LISTEN", "127.0.0.1:9001");
            jail.set_env(
                "COFFER__CHAINS__BASE_SEPOLIA__RPC_URLS",
                "[\"http://127.0.0.1:8545\"]",
            );
            let config = Config::load(Some(&file)).map_err(|e| e.to_string())?;
            assert_eq!(config.server.listen.port(), 9001);
            assert_eq!(config.log.format, LogFormat::Json);
            let registry = config.registry().map_err(|e| e.to_string())?;
            let chain = registry.by_name("base-sepolia").ok_or("base-sepolia")?;
            assert_eq!(chain.rpc_urls, ["http://127.0.0.1:8545"]);
            Ok(())
        });
    }

    #[test]
    fn a_named_file_must_exist() {
        let error = Config::load(Some(Path::new("/nonexistent/coffer.toml")))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("config file /nonexistent/coffer.toml does not exist")
        );
    }

    #[test]
    fn keystore_passwords_come_from_the_named_file_or_variable_and_never_print() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\nignored\n").expect("write");
        let mut x402 = X402Config {
            signer_keystores: vec![dir.path().join("signer.json")],
            signer_keystore_password_env: "COFFER_TEST_UNSET_PASSWORD_VARIABLE".to_owned(),
            ..X402Config::default()
        };
        let missing = x402.keystore_password().err().map(|e| e.to_string());
        assert!(
            missing
                .as_deref()
                .is_some_and(|m| m.contains("COFFER_TEST_UNSET_PASSWORD_VARIABLE")),
            "{missing:?}"
        );
        x402.signer_keystore_password_file = Some(file);
        let password = x402.keystore_password().expect("from the file");
        assert_eq!(secrecy::ExposeSecret::expose_secret(&password), "s3cret");
        assert!(!format!("{password:?}").contains("s3cret"));
        let error = x402.signers().err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.starts_with("x402.signer_keystores[0]: ")
                    && e.ends_with("no such keystore file")),
            "{error:?}"
        );
    }
}
