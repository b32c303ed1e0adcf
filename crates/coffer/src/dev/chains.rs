//! The local chains of `coffer dev`: one anvil node per network the vendor examples use, each
//! with every stablecoin the registry lists for it installed at the real chain's address (with
//! its decimals and EIP-712 domain), Multicall3, funded payers, and blocks mined at an interval.

use std::path::Path;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use coffer_core::registry::Asset;
use coffer_core::{Chain, ChainRegistry};
use coffer_evm::anvil::{Anvil, AnvilOptions};
use coffer_evm::testnet::{self, PlainTokenSpec, UsdcSpec};

use crate::failure::Failure;

/// Dev account indexes funded as payers.
pub(crate) const PAYERS: std::ops::RangeInclusive<u32> = 1..=4;
/// Whole tokens minted to each payer.
const PAYER_TOKENS: u64 = 10_000;
/// The networks `coffer dev` can run, by Coffer's key, in the order they start. Each keeps its
/// place here as its RPC port offset, so a chain's port does not depend on which others run.
pub const DEV_CHAINS: [&str; 4] = ["base-sepolia", "bsc", "polygon", "x-layer"];

/// A running local chain.
pub(crate) struct LocalChain {
    /// Coffer's key (`base-sepolia`).
    pub(crate) key: &'static str,
    /// EIP-155 chain id.
    pub(crate) chain_id: u64,
    /// The node.
    pub(crate) anvil: Anvil,
}

/// The chains named in `--chains` (Coffer keys or any name the registry knows them by), in
/// [`DEV_CHAINS`] order; all of them when `names` is empty.
///
/// # Errors
/// [`Failure`] naming a chain `coffer dev` does not run, with the ones it does.
pub(crate) fn select(
    names: &[String],
    registry: &ChainRegistry,
) -> Result<Vec<&'static str>, Failure> {
    if names.is_empty() {
        return Ok(DEV_CHAINS.to_vec());
    }
    let mut wanted = Vec::new();
    for name in names {
        let key = registry
            .by_name(name.trim())
            .and_then(|chain| DEV_CHAINS.iter().find(|key| **key == chain.key()))
            .ok_or_else(|| {
                Failure::new(format!(
                    "--chains: {name:?} is not a chain coffer dev runs; choose from {}",
                    DEV_CHAINS.join(", ")
                ))
            })?;
        wanted.push(*key);
    }
    Ok(DEV_CHAINS
        .into_iter()
        .filter(|key| wanted.contains(key))
        .collect())
}

/// Starts the chains `keys` with `binary`, together, their state kept in `data_dir` so a re-run
/// resumes. With `first_port` set, chain `i` of [`DEV_CHAINS`] listens on `first_port + i`
/// (stable across restarts); with `None`, each takes a free port.
///
/// # Errors
/// [`Failure`] naming the chain that did not start (the others are stopped).
pub(crate) async fn start(
    binary: &Path,
    data_dir: &Path,
    keys: &[&'static str],
    registry: &ChainRegistry,
    first_port: Option<u16>,
) -> Result<Vec<LocalChain>, Failure> {
    let starting = keys.iter().map(|key| async move {
        let chain_id = registry
            .by_name(key)
            .map(|chain| chain.chain_id)
            .ok_or_else(|| Failure::new(format!("{key}: not in the chain registry")))?;
        let port = match first_port {
            None => 0,
            Some(first) => {
                let offset = DEV_CHAINS.iter().position(|k| k == key).unwrap_or(0);
                first.saturating_add(u16::try_from(offset).unwrap_or(0))
            }
        };
        let options = AnvilOptions {
            binary: binary.to_path_buf(),
            chain_id,
            port,
            state_file: Some(data_dir.join(format!("{key}.chain.json"))),
            block_time: None,
        };
        let anvil = Anvil::start(&options).await.map_err(|error| {
            Failure::new(format!(
                "{key}: {error}{}",
                if port == 0 {
                    String::new()
                } else {
                    format!(" (port {port}: is another node using it? --rpc-ports-from 0 picks free ports)")
                }
            ))
        })?;
        Ok::<_, Failure>(LocalChain {
            key,
            chain_id,
            anvil,
        })
    });
    let mut chains = Vec::new();
    let mut failure = None;
    for started in futures_util::future::join_all(starting).await {
        match started {
            Ok(chain) => chains.push(chain),
            Err(error) => failure = failure.or(Some(error)),
        }
    }
    match failure {
        None => Ok(chains),
        Some(error) => {
            stop(chains).await;
            Err(error)
        }
    }
}

/// Stops the chains, reporting (not failing on) a chain that does not stop cleanly.
pub(crate) async fn stop(chains: Vec<LocalChain>) {
    for chain in chains {
        if let Err(error) = chain.anvil.stop().await {
            eprintln!("coffer dev: {}: {error}", chain.key);
        }
    }
}

/// Installs each of the chain's stablecoins as `known` lists them — an EIP-3009 token with
/// the registry's EIP-712 domain, or a plain ERC-20 — at its real address (minting to
/// `payers` when first installed), and Multicall3, and starts interval mining every
/// `block_time` seconds.
///
/// # Errors
/// [`Failure`] naming the chain.
pub(crate) async fn prepare(
    chain: &LocalChain,
    known: &Chain,
    signer: &PrivateKeySigner,
    payers: &[PrivateKeySigner],
    block_time: u64,
) -> Result<(), Failure> {
    let provider = sending_as(chain, signer)?;
    for asset in &known.assets {
        let installed = install_token(&provider, asset, signer)
            .await
            .map_err(Failure::context(format!("{}: {}", chain.key, asset.symbol)))?;
        if installed {
            for payer in payers {
                mint(&provider, chain, asset, payer.address()).await?;
            }
        }
    }
    // Public chains have Multicall3; settlement batches use it here too.
    testnet::install_multicall3(&provider)
        .await
        .map_err(Failure::context(chain.key))?;
    // Blocks keep coming without transactions, so confirmations advance.
    provider
        .raw_request::<_, ()>("evm_setIntervalMining".into(), (block_time,))
        .await
        .map_err(Failure::context(format!(
            "{}: cannot start interval mining",
            chain.key
        )))?;
    Ok(())
}

/// A provider on `chain` whose transactions `signer` sends.
fn sending_as(chain: &LocalChain, signer: &PrivateKeySigner) -> Result<impl Provider, Failure> {
    let url = chain
        .anvil
        .url()
        .parse()
        .map_err(|_| Failure::new(format!("{}: bad RPC URL", chain.key)))?;
    Ok(ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer.clone()))
        .connect_http(url))
}

/// Mints [`PAYER_TOKENS`] whole tokens of `asset` to `to`; the provider's wallet owns the token.
async fn mint<P: Provider>(
    provider: &P,
    chain: &LocalChain,
    asset: &Asset,
    to: Address,
) -> Result<(), Failure> {
    let amount = U256::from(PAYER_TOKENS) * U256::from(10u64).pow(U256::from(asset.decimals));
    testnet::mint(provider, asset.address, to, amount)
        .await
        .map_err(Failure::context(format!("{}: {}", chain.key, asset.symbol)))
}

/// Funds `to` on `chain` like a payer: 100 of the native coin for gas and [`PAYER_TOKENS`] of
/// each of the chain's tokens, minted by `owner` (the tokens' owner).
///
/// # Errors
/// [`Failure`] naming the chain.
pub(crate) async fn fund(
    chain: &LocalChain,
    known: &Chain,
    owner: &PrivateKeySigner,
    to: Address,
) -> Result<(), Failure> {
    let provider = sending_as(chain, owner)?;
    let gas = U256::from(100u64) * U256::from(10u64).pow(U256::from(18u8));
    provider
        .raw_request::<_, ()>("anvil_setBalance".into(), (to, gas))
        .await
        .map_err(Failure::context(format!("{}: cannot fund {to}", chain.key)))?;
    for asset in &known.assets {
        mint(&provider, chain, asset, to).await?;
    }
    Ok(())
}

/// Installs `asset`'s test token (owned by `signer`), unless code is already at its address;
/// whether it did.
async fn install_token<P: Provider>(
    provider: &P,
    asset: &Asset,
    signer: &PrivateKeySigner,
) -> Result<bool, coffer_evm::EvmError> {
    match &asset.eip712 {
        Some(domain) => {
            let spec = UsdcSpec {
                name: domain.name.clone(),
                version: domain.version.clone(),
                symbol: asset.symbol.clone(),
                decimals: asset.decimals,
                owner: signer.address(),
            };
            testnet::install_usdc_at(provider, asset.address, &spec).await
        }
        None => {
            let spec = PlainTokenSpec {
                name: plain_token_name(&asset.symbol),
                symbol: asset.symbol.clone(),
                decimals: asset.decimals,
                owner: signer.address(),
            };
            testnet::install_plain_token_at(provider, asset.address, &spec).await
        }
    }
}

/// The ERC-20 name a plain token goes by on the public chains.
fn plain_token_name(symbol: &str) -> String {
    match symbol {
        "USDT" => "Tether USD".to_owned(),
        "USDC" => "USD Coin".to_owned(),
        other => other.to_owned(),
    }
}
