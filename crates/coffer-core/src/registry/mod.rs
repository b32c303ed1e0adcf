//! The chain registry: which EVM networks Coffer knows, their stablecoins, and every name the
//! API families use for them.
//!
//! Each API family names networks its own way — x402 v1 says `base-sepolia`, x402 v2 and CAIP-2
//! say `eip155:84532`, OKX says `chainIndex: "84532"`, GatePay says `chain: "MATIC"` with
//! `fullCurrType: "USDT_MATIC"`, CryptoPay says `blockchain: "polygon"`. The registry is the one
//! place that knows all of them, so adapters translate at the edge and the core only ever sees a
//! [`Chain`].
//!
//! [`ChainRegistry::builtin`] holds the well-known networks; configuration adds RPC URLs and may
//! add or override chains and assets with [`ChainRegistry::apply`]. EIP-712 domain names differ
//! between deployments of the same token ("USD Coin" on Base, "USDC" on Base Sepolia), so they
//! are data per asset, never constants in code.

mod builtin;

use std::collections::BTreeMap;

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

/// How a token can be paid with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransferMethod {
    /// Plain ERC-20 `transfer`; the payer broadcasts.
    Erc20,
    /// ERC-20 plus EIP-3009 `transferWithAuthorization`, so a facilitator can settle a signed
    /// authorization (x402 `exact`).
    Eip3009,
}

/// The EIP-712 domain fields a token signs authorizations with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eip712Domain {
    /// The domain `name`, e.g. `"USD Coin"`.
    pub name: String,
    /// The domain `version`, e.g. `"2"`.
    pub version: String,
}

/// A token on one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Asset {
    /// Ticker used on the wire, upper case (`USDC`).
    pub symbol: String,
    /// Contract address.
    pub address: Address,
    /// Number of decimals of the token.
    pub decimals: u8,
    /// Whether authorizations (EIP-3009) are available.
    pub transfer_method: TransferMethod,
    /// The EIP-712 domain, present for [`TransferMethod::Eip3009`] tokens.
    pub eip712: Option<Eip712Domain>,
    /// GatePay's `fullCurrType`, e.g. `USDT_MATIC`.
    pub gatepay_full_curr_type: String,
}

/// The names one network goes by in each API family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkNames {
    /// x402 v1 network name (`base-sepolia`), also Coffer's own key for the chain.
    pub x402_v1: String,
    /// CAIP-2 id (`eip155:84532`), used by x402 v2.
    pub caip2: String,
    /// OKX `chainIndex` (the chain id as a decimal string for EVM chains).
    pub okx_chain_index: String,
    /// OKX `chainName` (`X Layer`).
    pub okx_chain_name: String,
    /// GatePay chain code (`MATIC`).
    pub gatepay_chain: String,
    /// CryptoPay `blockchain` slug (`polygon`).
    pub cryptopay_slug: String,
    /// Further names accepted on input, e.g. Pelago's `bsc-mainnet`.
    pub aliases: Vec<String>,
}

/// An EVM network Coffer can watch and settle on. `Debug` shows its RPC URLs redacted (they
/// carry API keys).
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Human name (`Base Sepolia`).
    pub display_name: String,
    /// Whether this is a test network.
    pub testnet: bool,
    /// Symbol of the native coin (`ETH`, `BNB`, `POL`).
    pub native_symbol: String,
    /// Blocks on top of a payment's block before it counts as confirmed.
    pub confirmations: u64,
    /// RPC endpoints, tried in order with failover. Empty until configured.
    pub rpc_urls: Vec<String>,
    /// Names in each API family.
    pub names: NetworkNames,
    /// Known tokens.
    pub assets: Vec<Asset>,
}

/// RPC URLs as `Debug` shows them: scheme, host and port only.
struct RedactedUrls<'a>(&'a [String]);

impl std::fmt::Debug for RedactedUrls<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|url| crate::redact::redact_url(url)))
            .finish()
    }
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("chain_id", &self.chain_id)
            .field("display_name", &self.display_name)
            .field("testnet", &self.testnet)
            .field("native_symbol", &self.native_symbol)
            .field("confirmations", &self.confirmations)
            .field("rpc_urls", &RedactedUrls(&self.rpc_urls))
            .field("names", &self.names)
            .field("assets", &self.assets)
            .finish()
    }
}

impl Chain {
    /// Coffer's key for the chain, the x402 v1 name (`base-sepolia`).
    pub fn key(&self) -> &str {
        &self.names.x402_v1
    }

    /// What an operator does to use a chain this Coffer knows but does not watch: the setting
    /// that gives it RPC URLs, in the configuration file and in the environment.
    pub fn rpc_urls_hint(&self) -> String {
        let key = self.key();
        format!(
            "{} is known to Coffer but not configured on this server: set chains.{key}.rpc_urls (or COFFER__CHAINS__{}__RPC_URLS) to accept it",
            self.display_name,
            key.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// Finds a token by symbol, case-insensitively.
    pub fn asset_by_symbol(&self, symbol: &str) -> Option<&Asset> {
        self.assets
            .iter()
            .find(|asset| asset.symbol.eq_ignore_ascii_case(symbol))
    }

    /// Finds a token by contract address.
    pub fn asset_by_address(&self, address: Address) -> Option<&Asset> {
        self.assets.iter().find(|asset| asset.address == address)
    }

    /// Whether `name` is any of this chain's names (key, CAIP-2, aliases, slugs), ignoring case.
    pub fn answers_to(&self, name: &str) -> bool {
        let names = &self.names;
        [&names.x402_v1, &names.caip2, &names.cryptopay_slug]
            .into_iter()
            .chain(names.aliases.iter())
            .any(|known| known.eq_ignore_ascii_case(name))
    }
}

/// Why a registry override cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A new chain must say its chain id.
    #[error("chains.{key}.chain_id: required for a chain Coffer does not know")]
    MissingChainId {
        /// The chain's key in configuration.
        key: String,
    },
    /// A new asset must give everything about itself.
    #[error("chains.{key}.assets.{symbol}.{field}: required for an asset Coffer does not know")]
    MissingAssetField {
        /// The chain's key.
        key: String,
        /// The asset's symbol.
        symbol: String,
        /// The missing field.
        field: &'static str,
    },
    /// An EIP-3009 asset needs its EIP-712 domain.
    #[error("chains.{key}.assets.{symbol}.eip712: required when transfer_method is \"eip3009\"")]
    MissingEip712 {
        /// The chain's key.
        key: String,
        /// The asset's symbol.
        symbol: String,
    },
    /// Two chains share an id or a name.
    #[error("chains.{key}: {what} is already used by chain {other}")]
    Duplicate {
        /// The chain's key.
        key: String,
        /// What collides.
        what: String,
        /// The other chain's key.
        other: String,
    },
    /// A value is out of range.
    #[error("chains.{key}.{field}: {reason}")]
    Invalid {
        /// The chain's key.
        key: String,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// Configuration for one chain: RPC endpoints plus optional overrides of registry data.
///
/// For a chain the registry knows, every field is optional; for a new chain `chain_id` is
/// required and the names default to the key. `Debug` shows the RPC URLs redacted.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainOverride {
    /// EIP-155 chain id (required for a new chain).
    pub chain_id: Option<u64>,
    /// RPC endpoints, tried in order with failover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpc_urls: Vec<String>,
    /// Confirmations before a payment counts.
    pub confirmations: Option<u64>,
    /// Human name.
    pub display_name: Option<String>,
    /// Whether this is a test network.
    pub testnet: Option<bool>,
    /// Native coin symbol.
    pub native_symbol: Option<String>,
    /// OKX `chainIndex`.
    pub okx_chain_index: Option<String>,
    /// OKX `chainName`.
    pub okx_chain_name: Option<String>,
    /// GatePay chain code.
    pub gatepay_chain: Option<String>,
    /// CryptoPay slug.
    pub cryptopay_slug: Option<String>,
    /// Extra accepted names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Assets to add or override, keyed by symbol.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assets: BTreeMap<String, AssetOverride>,
}

impl std::fmt::Debug for ChainOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainOverride")
            .field("chain_id", &self.chain_id)
            .field("rpc_urls", &RedactedUrls(&self.rpc_urls))
            .field("confirmations", &self.confirmations)
            .field("display_name", &self.display_name)
            .field("testnet", &self.testnet)
            .field("native_symbol", &self.native_symbol)
            .field("okx_chain_index", &self.okx_chain_index)
            .field("okx_chain_name", &self.okx_chain_name)
            .field("gatepay_chain", &self.gatepay_chain)
            .field("cryptopay_slug", &self.cryptopay_slug)
            .field("aliases", &self.aliases)
            .field("assets", &self.assets)
            .finish()
    }
}

/// Configuration for one asset; every field overrides the registry's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetOverride {
    /// Contract address.
    pub address: Option<Address>,
    /// Decimals.
    pub decimals: Option<u8>,
    /// `erc20` or `eip3009`.
    pub transfer_method: Option<TransferMethod>,
    /// EIP-712 domain.
    pub eip712: Option<Eip712Domain>,
    /// GatePay `fullCurrType`.
    pub gatepay_full_curr_type: Option<String>,
}

/// All chains Coffer knows, with lookups by every naming scheme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainRegistry {
    chains: Vec<Chain>,
}

impl ChainRegistry {
    /// The built-in networks (no RPC URLs yet).
    pub fn builtin() -> Self {
        ChainRegistry {
            chains: builtin::chains(),
        }
    }

    /// An empty registry, for tests that want full control.
    pub fn empty() -> Self {
        ChainRegistry { chains: Vec::new() }
    }

    /// Applies configuration overrides in key order, adding unknown chains and assets.
    ///
    /// # Errors
    /// [`RegistryError`] naming the configuration key that is missing, invalid or colliding.
    pub fn apply(
        &mut self,
        overrides: &BTreeMap<String, ChainOverride>,
    ) -> Result<(), RegistryError> {
        for (key, change) in overrides {
            let index = match self.chains.iter().position(|chain| chain.key() == key) {
                Some(index) => index,
                None => {
                    let chain_id = change
                        .chain_id
                        .ok_or_else(|| RegistryError::MissingChainId { key: key.clone() })?;
                    self.chains.push(Chain::new_named(key, chain_id));
                    self.chains.len() - 1
                }
            };
            apply_chain(key, &mut self.chains[index], change)?;
        }
        self.check_unique()
    }

    fn check_unique(&self) -> Result<(), RegistryError> {
        for (i, chain) in self.chains.iter().enumerate() {
            for other in &self.chains[..i] {
                let v1_names = |c: &Chain| -> Vec<String> {
                    std::iter::once(&c.names.x402_v1)
                        .chain(&c.names.aliases)
                        .map(|name| name.to_ascii_lowercase())
                        .collect()
                };
                let theirs = v1_names(other);
                let collision = if chain.chain_id == other.chain_id {
                    Some(format!("chain_id {}", chain.chain_id))
                } else if chain
                    .names
                    .cryptopay_slug
                    .eq_ignore_ascii_case(&other.names.cryptopay_slug)
                {
                    Some(format!("cryptopay_slug {:?}", chain.names.cryptopay_slug))
                } else if chain.names.okx_chain_index == other.names.okx_chain_index {
                    Some(format!("okx_chain_index {:?}", chain.names.okx_chain_index))
                } else {
                    v1_names(chain)
                        .into_iter()
                        .find(|name| theirs.contains(name))
                        .map(|name| format!("name {name:?}"))
                };
                if let Some(what) = collision {
                    return Err(RegistryError::Duplicate {
                        key: chain.key().to_owned(),
                        what,
                        other: other.key().to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every chain, in registry order.
    pub fn chains(&self) -> &[Chain] {
        &self.chains
    }

    /// Chains that have at least one RPC URL configured.
    pub fn configured(&self) -> impl Iterator<Item = &Chain> {
        self.chains
            .iter()
            .filter(|chain| !chain.rpc_urls.is_empty())
    }

    /// By EIP-155 chain id.
    pub fn by_chain_id(&self, chain_id: u64) -> Option<&Chain> {
        self.chains.iter().find(|chain| chain.chain_id == chain_id)
    }

    /// By Coffer's key / x402 v1 name (`base-sepolia`), CAIP-2 id, CryptoPay slug or alias.
    pub fn by_name(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|chain| chain.answers_to(name))
    }

    /// By x402 v1 name or alias only.
    pub fn by_x402_v1_name(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|chain| {
            chain.names.x402_v1 == name || chain.names.aliases.iter().any(|alias| alias == name)
        })
    }

    /// By CAIP-2 id (`eip155:84532`).
    pub fn by_caip2(&self, caip2: &str) -> Option<&Chain> {
        self.chains.iter().find(|chain| chain.names.caip2 == caip2)
    }

    /// By OKX `chainIndex`.
    pub fn by_okx_chain_index(&self, index: &str) -> Option<&Chain> {
        self.chains
            .iter()
            .find(|chain| chain.names.okx_chain_index == index)
    }

    /// By GatePay chain code, case-insensitively.
    pub fn by_gatepay_chain(&self, code: &str) -> Option<&Chain> {
        self.chains
            .iter()
            .find(|chain| chain.names.gatepay_chain.eq_ignore_ascii_case(code))
    }

    /// By GatePay `fullCurrType` (`USDT_MATIC`), returning the chain and the asset.
    pub fn by_gatepay_full_curr_type(&self, full: &str) -> Option<(&Chain, &Asset)> {
        self.chains.iter().find_map(|chain| {
            chain
                .assets
                .iter()
                .find(|asset| asset.gatepay_full_curr_type.eq_ignore_ascii_case(full))
                .map(|asset| (chain, asset))
        })
    }

    /// By CryptoPay `blockchain` slug, case-insensitively.
    pub fn by_cryptopay_slug(&self, slug: &str) -> Option<&Chain> {
        self.chains
            .iter()
            .find(|chain| chain.names.cryptopay_slug.eq_ignore_ascii_case(slug))
    }
}

impl Chain {
    fn new_named(key: &str, chain_id: u64) -> Self {
        Chain {
            chain_id,
            display_name: key.to_owned(),
            testnet: false,
            native_symbol: "ETH".to_owned(),
            confirmations: 12,
            rpc_urls: Vec::new(),
            names: NetworkNames {
                x402_v1: key.to_owned(),
                caip2: format!("eip155:{chain_id}"),
                okx_chain_index: chain_id.to_string(),
                okx_chain_name: key.to_owned(),
                gatepay_chain: key.to_ascii_uppercase(),
                cryptopay_slug: key.to_owned(),
                aliases: Vec::new(),
            },
            assets: Vec::new(),
        }
    }
}

fn apply_chain(key: &str, chain: &mut Chain, change: &ChainOverride) -> Result<(), RegistryError> {
    let set = |target: &mut String, value: &Option<String>| {
        if let Some(value) = value {
            target.clone_from(value);
        }
    };
    if let Some(chain_id) = change.chain_id {
        chain.chain_id = chain_id;
        chain.names.caip2 = format!("eip155:{chain_id}");
    }
    if chain.chain_id == 0 {
        return Err(RegistryError::Invalid {
            key: key.to_owned(),
            field: "chain_id".to_owned(),
            reason: "must be greater than zero".to_owned(),
        });
    }
    for (i, url) in change.rpc_urls.iter().enumerate() {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(RegistryError::Invalid {
                key: key.to_owned(),
                field: format!("rpc_urls[{i}]"),
                reason: format!(
                    "{:?} is not an http:// or https:// URL",
                    crate::redact::redact_url(url)
                ),
            });
        }
    }
    if !change.rpc_urls.is_empty() {
        chain.rpc_urls.clone_from(&change.rpc_urls);
    }
    if let Some(confirmations) = change.confirmations {
        chain.confirmations = confirmations;
    }
    if let Some(testnet) = change.testnet {
        chain.testnet = testnet;
    }
    set(&mut chain.display_name, &change.display_name);
    set(&mut chain.native_symbol, &change.native_symbol);
    set(&mut chain.names.okx_chain_index, &change.okx_chain_index);
    set(&mut chain.names.okx_chain_name, &change.okx_chain_name);
    set(&mut chain.names.gatepay_chain, &change.gatepay_chain);
    set(&mut chain.names.cryptopay_slug, &change.cryptopay_slug);
    for alias in &change.aliases {
        if !chain.names.aliases.contains(alias) {
            chain.names.aliases.push(alias.clone());
        }
    }
    for (symbol, asset_change) in &change.assets {
        apply_asset(key, chain, symbol, asset_change)?;
    }
    Ok(())
}

fn apply_asset(
    key: &str,
    chain: &mut Chain,
    symbol: &str,
    change: &AssetOverride,
) -> Result<(), RegistryError> {
    let missing = |field| RegistryError::MissingAssetField {
        key: key.to_owned(),
        symbol: symbol.to_owned(),
        field,
    };
    let gatepay_chain = chain.names.gatepay_chain.clone();
    let asset = match chain.asset_by_symbol(symbol).is_some() {
        true => chain
            .assets
            .iter_mut()
            .find(|asset| asset.symbol.eq_ignore_ascii_case(symbol))
            .ok_or_else(|| missing("symbol"))?,
        false => {
            chain.assets.push(Asset {
                symbol: symbol.to_ascii_uppercase(),
                address: change.address.ok_or_else(|| missing("address"))?,
                decimals: change.decimals.ok_or_else(|| missing("decimals"))?,
                transfer_method: TransferMethod::Erc20,
                eip712: None,
                gatepay_full_curr_type: format!("{}_{gatepay_chain}", symbol.to_ascii_uppercase()),
            });
            chain.assets.last_mut().ok_or_else(|| missing("symbol"))?
        }
    };
    if let Some(address) = change.address {
        asset.address = address;
    }
    if let Some(decimals) = change.decimals {
        if decimals > 77 {
            return Err(RegistryError::Invalid {
                key: key.to_owned(),
                field: format!("assets.{symbol}.decimals"),
                reason: "must be at most 77".to_owned(),
            });
        }
        asset.decimals = decimals;
    }
    if let Some(method) = change.transfer_method {
        asset.transfer_method = method;
    }
    if let Some(domain) = &change.eip712 {
        asset.eip712 = Some(domain.clone());
    }
    if let Some(full) = &change.gatepay_full_curr_type {
        asset.gatepay_full_curr_type.clone_from(full);
    }
    if asset.transfer_method == TransferMethod::Eip3009 && asset.eip712.is_none() {
        return Err(RegistryError::MissingEip712 {
            key: key.to_owned(),
            symbol: symbol.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
