//! Test tokens on a local chain: deploy them fresh, or install them at a canonical address.
//!
//! The official x402 clients only pay the public USDC deployments, so `coffer dev` places the
//! EIP-3009 token at Base Sepolia's USDC address with `anvil_setCode` and then calls
//! `initialize` — the tokens have no constructor arguments and no immutables for exactly this
//! reason, and behave identically when deployed normally.

use alloy::network::Ethereum;
use alloy::primitives::{Address, B256, Bytes, U256, b256, keccak256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::{MnemonicBuilder, PrivateKeySigner, coins_bip39::English};
use alloy::sol_types::{Eip712Domain, eip712_domain};

use crate::EvmError;
use crate::contracts::{MULTICALL3, TestUsdc, TestUsdt};

/// The mnemonic anvil funds its default accounts from. Public: for local chains only.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// The dev account at `m/44'/60'/0'/0/{index}` of [`DEV_MNEMONIC`] (anvil's default accounts).
///
/// # Errors
/// [`EvmError::Process`] if derivation fails (it does not for indexes below 2^31).
pub fn dev_account(index: u32) -> Result<PrivateKeySigner, EvmError> {
    MnemonicBuilder::<English>::default()
        .phrase(DEV_MNEMONIC)
        .index(index)
        .and_then(|builder| builder.build())
        .map_err(|error| EvmError::Process {
            what: "deriving a dev account",
            detail: error.to_string(),
        })
}

/// What describes an EIP-3009 test token.
#[derive(Debug, Clone)]
pub struct UsdcSpec {
    /// ERC-20 name, also the EIP-712 domain name (`"USDC"` on Base Sepolia).
    pub name: String,
    /// EIP-712 domain version (`"2"`).
    pub version: String,
    /// Ticker.
    pub symbol: String,
    /// Decimals (6 for USDC).
    pub decimals: u8,
    /// Who may mint.
    pub owner: Address,
}

/// The EIP-712 domain of USDC as Circle deploys it (name `USDC`, version `2`) and as
/// `coffer dev` installs the test token: what a payer's EIP-3009 authorization for `token` on
/// `chain_id` is signed in.
pub fn usdc_domain(chain_id: u64, token: Address) -> Eip712Domain {
    eip712_domain! {
        name: "USDC",
        version: "2",
        chain_id: chain_id,
        verifying_contract: token,
    }
}

/// What describes a plain ERC-20 test token.
#[derive(Debug, Clone)]
pub struct PlainTokenSpec {
    /// ERC-20 name.
    pub name: String,
    /// Ticker.
    pub symbol: String,
    /// Decimals (18 for BSC USDT).
    pub decimals: u8,
    /// Who may mint.
    pub owner: Address,
}

async fn confirm<P: Provider<Ethereum>>(
    call: alloy::contract::CallBuilder<
        &P,
        std::marker::PhantomData<impl alloy::sol_types::SolCall>,
    >,
) -> Result<(), EvmError> {
    let receipt = call.send().await?.get_receipt().await?;
    if receipt.status() {
        Ok(())
    } else {
        Err(EvmError::Reverted(receipt.transaction_hash))
    }
}

/// Deploys the EIP-3009 token as a new contract and initializes it. The provider's wallet
/// must be `spec.owner` or any funded account.
///
/// # Errors
/// [`EvmError`] when deployment or initialization fails.
pub async fn deploy_usdc<P: Provider<Ethereum>>(
    provider: &P,
    spec: &UsdcSpec,
) -> Result<Address, EvmError> {
    let token = TestUsdc::deploy(provider).await?;
    initialize_usdc(provider, *token.address(), spec).await?;
    Ok(*token.address())
}

/// Installs the EIP-3009 token's runtime code at `address` on an anvil chain and initializes
/// it; does nothing when code is already there (a restarted chain with saved state).
///
/// # Errors
/// [`EvmError`] when an RPC call fails or initialization reverts.
pub async fn install_usdc_at<P: Provider<Ethereum>>(
    provider: &P,
    address: Address,
    spec: &UsdcSpec,
) -> Result<bool, EvmError> {
    if !provider.get_code_at(address).await?.is_empty() {
        return Ok(false);
    }
    provider
        .anvil_set_code(address, TestUsdc::DEPLOYED_BYTECODE.clone())
        .await?;
    initialize_usdc(provider, address, spec).await?;
    Ok(true)
}

async fn initialize_usdc<P: Provider<Ethereum>>(
    provider: &P,
    address: Address,
    spec: &UsdcSpec,
) -> Result<(), EvmError> {
    let token = TestUsdc::new(address, provider);
    confirm(token.initialize(
        spec.name.clone(),
        spec.version.clone(),
        spec.symbol.clone(),
        spec.decimals,
        spec.owner,
    ))
    .await
}

/// Deploys the plain ERC-20 as a new contract and initializes it.
///
/// # Errors
/// [`EvmError`] when deployment or initialization fails.
pub async fn deploy_plain_token<P: Provider<Ethereum>>(
    provider: &P,
    spec: &PlainTokenSpec,
) -> Result<Address, EvmError> {
    let token = TestUsdt::deploy(provider).await?;
    initialize_plain(provider, *token.address(), spec).await?;
    Ok(*token.address())
}

/// Installs the plain ERC-20 at `address` on an anvil chain, like [`install_usdc_at`].
///
/// # Errors
/// [`EvmError`] when an RPC call fails or initialization reverts.
pub async fn install_plain_token_at<P: Provider<Ethereum>>(
    provider: &P,
    address: Address,
    spec: &PlainTokenSpec,
) -> Result<bool, EvmError> {
    if !provider.get_code_at(address).await?.is_empty() {
        return Ok(false);
    }
    provider
        .anvil_set_code(address, TestUsdt::DEPLOYED_BYTECODE.clone())
        .await?;
    initialize_plain(provider, address, spec).await?;
    Ok(true)
}

async fn initialize_plain<P: Provider<Ethereum>>(
    provider: &P,
    address: Address,
    spec: &PlainTokenSpec,
) -> Result<(), EvmError> {
    let token = TestUsdt::new(address, provider);
    confirm(token.initialize(
        spec.name.clone(),
        spec.symbol.clone(),
        spec.decimals,
        spec.owner,
    ))
    .await
}

/// The keccak-256 of Multicall3's code at [`MULTICALL3`] on Ethereum mainnet (and every chain
/// it was deployed to with its keyless transaction).
pub const MULTICALL3_CODEHASH: B256 =
    b256!("d5c15df687b16f2ff992fc8d767b4216323184a2bbc6ee2f9c398c318e770891");

/// Multicall3's canonical deployed bytecode, from `contracts/canonical/Multicall3.json` (taken
/// from a registry package by `contracts/canonical/extract.mjs`), checked against
/// [`MULTICALL3_CODEHASH`].
///
/// # Errors
/// [`EvmError::Artifact`] when the committed artifact is not that code.
pub fn canonical_multicall3() -> Result<Bytes, EvmError> {
    let artifact: serde_json::Value =
        serde_json::from_str(include_str!("../../../contracts/canonical/Multicall3.json"))
            .map_err(|error| EvmError::Artifact(format!("Multicall3 artifact: {error}")))?;
    let code: Bytes = artifact["deployedBytecode"]
        .as_str()
        .and_then(|hex| hex.parse().ok())
        .ok_or_else(|| EvmError::Artifact("Multicall3 artifact: no deployedBytecode".into()))?;
    if keccak256(&code) != MULTICALL3_CODEHASH {
        return Err(EvmError::Artifact(format!(
            "Multicall3 artifact: code hash {} is not the canonical {MULTICALL3_CODEHASH}",
            keccak256(&code)
        )));
    }
    Ok(code)
}

/// Installs Multicall3's canonical code at [`MULTICALL3`] on an anvil chain (public chains
/// have it there); does nothing when code is already there.
///
/// # Errors
/// [`EvmError::Rpc`] when an RPC call fails, [`EvmError::Artifact`] when the committed code is
/// not the canonical one.
pub async fn install_multicall3<P: Provider<Ethereum>>(provider: &P) -> Result<bool, EvmError> {
    if has_code(provider, MULTICALL3).await? {
        return Ok(false);
    }
    provider
        .anvil_set_code(MULTICALL3, canonical_multicall3()?)
        .await?;
    Ok(true)
}

/// Mints `amount` base units of a test token (either kind) to `to`; the provider's wallet
/// must be the token's owner.
///
/// # Errors
/// [`EvmError`] when the mint reverts.
pub async fn mint<P: Provider<Ethereum>>(
    provider: &P,
    token: Address,
    to: Address,
    amount: U256,
) -> Result<(), EvmError> {
    confirm(TestUsdt::new(token, provider).mint(to, amount)).await
}

/// Whether `address` holds contract code.
///
/// # Errors
/// [`EvmError::Rpc`] when the call fails.
pub async fn has_code<P: Provider<Ethereum>>(
    provider: &P,
    address: Address,
) -> Result<bool, EvmError> {
    let code: Bytes = provider.get_code_at(address).await?;
    Ok(!code.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_multicall3_is_mainnets_code() {
        let code = canonical_multicall3().expect("the canonical artifact");
        assert_eq!(keccak256(&code), MULTICALL3_CODEHASH);
        assert_eq!(code.len(), 3_808);
    }
}
