//! The local chains of `coffer dev`: two anvil nodes, each with its test token installed at the
//! real chain's address, Multicall3, funded payers, and blocks mined at an interval.

use std::path::Path;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256, address};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use coffer_evm::anvil::{Anvil, AnvilOptions};
use coffer_evm::testnet::{self, PlainTokenSpec, UsdcSpec};

use crate::failure::Failure;

/// Base Sepolia's USDC address, where the official x402 clients expect USDC on chain 84532.
pub const BASE_SEPOLIA_USDC: Address = address!("0x036CbD53842c5426634e7929541eC2318f3dCF7e");
/// BSC's USDT address.
pub const BSC_USDT: Address = address!("0x55d398326f99059fF775485246999027B3197955");
/// Dev account indexes funded as payers.
pub(crate) const PAYERS: std::ops::RangeInclusive<u32> = 1..=4;
/// Whole tokens minted to each payer.
const PAYER_TOKENS: u64 = 10_000;
/// The chains, by Coffer's key and chain id.
const CHAINS: [(&str, u64); 2] = [("base-sepolia", 84_532), ("bsc", 56)];

/// A running local chain.
pub(crate) struct LocalChain {
    /// Coffer's key (`base-sepolia`).
    pub(crate) key: &'static str,
    /// EIP-155 chain id.
    pub(crate) chain_id: u64,
    /// The node.
    pub(crate) anvil: Anvil,
}

/// Starts the chains with `binary`, their state kept in `data_dir` so a re-run resumes.
///
/// # Errors
/// [`Failure`] naming the chain that did not start.
pub(crate) async fn start(binary: &Path, data_dir: &Path) -> Result<Vec<LocalChain>, Failure> {
    let mut chains = Vec::new();
    for (key, chain_id) in CHAINS {
        let options = AnvilOptions {
            binary: binary.to_path_buf(),
            chain_id,
            port: 0,
            state_file: Some(data_dir.join(format!("{key}.chain.json"))),
            block_time: None,
        };
        let anvil = Anvil::start(&options)
            .await
            .map_err(Failure::context(key))?;
        chains.push(LocalChain {
            key,
            chain_id,
            anvil,
        });
    }
    Ok(chains)
}

/// Stops the chains, reporting (not failing on) a chain that does not stop cleanly.
pub(crate) async fn stop(chains: Vec<LocalChain>) {
    for chain in chains {
        if let Err(error) = chain.anvil.stop().await {
            eprintln!("coffer dev: {}: {error}", chain.key);
        }
    }
}

/// Installs the chain's test token (minting to `payers` on the first run) and Multicall3, and
/// starts interval mining every `block_time` seconds.
///
/// # Errors
/// [`Failure`] naming the chain.
pub(crate) async fn prepare(
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
            .map_err(Failure::context(chain.key))?;
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
            .map_err(Failure::context(chain.key))?;
        (BSC_USDT, spec.decimals, installed)
    };
    // Public chains have Multicall3; settlement batches use it here too.
    testnet::install_multicall3(&provider)
        .await
        .map_err(Failure::context(chain.key))?;
    if installed {
        let amount = U256::from(PAYER_TOKENS) * U256::from(10u64).pow(U256::from(decimals));
        for payer in payers {
            testnet::mint(&provider, token, payer.address(), amount)
                .await
                .map_err(Failure::context(chain.key))?;
        }
    }
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
