//! Payout wallets: a merchant's hot wallet per chain, the account money goes out from (refunds
//! and payouts). Its private key is made here (or imported), stored sealed with the master key
//! like the other secrets, and never shown: the CLI and the API name only the address. Balances
//! are read from the chain when asked.

use std::sync::Arc;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use coffer_core::{Amount, ChainRegistry, MerchantId};
use coffer_evm::contracts::IERC20;
use coffer_evm::rpc::ChainRpc;
use coffer_store::{Constraint, PayoutWalletRow, Store, StoreError};
use secrecy::{ExposeSecret, SecretString};

/// Why a payout wallet could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PayoutWalletError {
    /// The chain is not one Coffer knows.
    #[error("--chain: {0:?} is not a chain Coffer knows")]
    UnknownChain(String),
    /// The merchant has a payout wallet on that chain already.
    #[error("the merchant has a payout wallet on {0} already")]
    Exists(String),
    /// An imported key is not a 32-byte secp256k1 private key.
    #[error("the key is not a private key (64 hex digits, with or without 0x)")]
    BadKey,
    /// Storage failed (or the master key is missing).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One token's balance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenBalance {
    /// Its symbol (`USDC`), or the chain's native coin (`ETH`).
    pub currency: String,
    /// Its contract, or `None` for the native coin.
    pub token_address: Option<String>,
    /// The balance in token units (`12.5`).
    pub amount: String,
}

/// A payout wallet as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WalletView {
    /// Coffer's key of the chain (`base-sepolia`).
    pub chain: String,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The wallet's address.
    pub address: String,
    /// The native coin first, then each registry token of the chain; `None` when the chain
    /// could not be asked (see `error`).
    pub balances: Option<Vec<TokenBalance>>,
    /// Why the balances are missing.
    pub error: Option<String>,
}

/// The payout-wallet service.
#[derive(Clone)]
pub struct PayoutWallets {
    store: Arc<dyn Store>,
    chains: Arc<ChainRegistry>,
    rpcs: Arc<Vec<ChainRpc>>,
}

impl PayoutWallets {
    /// A service over `store`, knowing `chains`, reading balances through `rpcs`.
    pub fn new(
        store: Arc<dyn Store>,
        chains: Arc<ChainRegistry>,
        rpcs: Arc<Vec<ChainRpc>>,
    ) -> Self {
        PayoutWallets {
            store,
            chains,
            rpcs,
        }
    }

    fn chain_id(&self, chain: &str) -> Result<(u64, String), PayoutWalletError> {
        self.chains
            .by_name(chain)
            .map(|known| (known.chain_id, known.key().to_owned()))
            .ok_or_else(|| PayoutWalletError::UnknownChain(chain.to_owned()))
    }

    /// Makes a new wallet for `merchant` on `chain` (any name the registry knows it by); its
    /// address.
    ///
    /// # Errors
    /// [`PayoutWalletError`] for an unknown chain, an existing wallet, or storage.
    pub async fn create(
        &self,
        merchant: &MerchantId,
        chain: &str,
    ) -> Result<Address, PayoutWalletError> {
        let signer = PrivateKeySigner::random();
        self.store_wallet(merchant, chain, &signer).await
    }

    /// Imports `key` (hex) as `merchant`'s wallet on `chain`; its address.
    ///
    /// # Errors
    /// As [`PayoutWallets::create`], and [`PayoutWalletError::BadKey`].
    pub async fn import(
        &self,
        merchant: &MerchantId,
        chain: &str,
        key: &SecretString,
    ) -> Result<Address, PayoutWalletError> {
        let signer: PrivateKeySigner = key
            .expose_secret()
            .trim()
            .parse()
            .map_err(|_| PayoutWalletError::BadKey)?;
        self.store_wallet(merchant, chain, &signer).await
    }

    async fn store_wallet(
        &self,
        merchant: &MerchantId,
        chain: &str,
        signer: &PrivateKeySigner,
    ) -> Result<Address, PayoutWalletError> {
        let (chain_id, key) = self.chain_id(chain)?;
        let row = PayoutWalletRow {
            merchant_id: merchant.clone(),
            chain_id,
            address: signer.address().to_checksum(None),
            private_key: format!("0x{}", alloy::hex::encode(signer.to_bytes())),
            created_at_ms: crate::clock::now_ms(),
        };
        match self.store.insert_payout_wallet(&row).await {
            Ok(()) => Ok(signer.address()),
            Err(StoreError::Conflict(Constraint::PayoutWallet)) => {
                Err(PayoutWalletError::Exists(key))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// `merchant`'s wallets: chain key, chain id and address.
    ///
    /// # Errors
    /// [`PayoutWalletError::Store`].
    pub async fn list(
        &self,
        merchant: &MerchantId,
    ) -> Result<Vec<(String, u64, String)>, PayoutWalletError> {
        Ok(self
            .store
            .payout_wallets(merchant)
            .await?
            .into_iter()
            .map(|wallet| {
                let chain = self
                    .chains
                    .by_chain_id(wallet.chain_id)
                    .map_or_else(|| wallet.chain_id.to_string(), |c| c.key().to_owned());
                (chain, wallet.chain_id, wallet.address)
            })
            .collect())
    }

    /// `merchant`'s wallets with their balances, read from each chain now.
    ///
    /// # Errors
    /// [`PayoutWalletError::Store`]; a chain that cannot be asked is reported in its entry.
    pub async fn with_balances(
        &self,
        merchant: &MerchantId,
    ) -> Result<Vec<WalletView>, PayoutWalletError> {
        let mut views = Vec::new();
        for (chain, chain_id, address) in self.list(merchant).await? {
            let (balances, error) = match self.balances(chain_id, &address).await {
                Ok(balances) => (Some(balances), None),
                Err(why) => (None, Some(why)),
            };
            views.push(WalletView {
                chain,
                chain_id,
                address,
                balances,
                error,
            });
        }
        Ok(views)
    }

    async fn balances(&self, chain_id: u64, address: &str) -> Result<Vec<TokenBalance>, String> {
        let known = self
            .chains
            .by_chain_id(chain_id)
            .ok_or("the chain is no longer in the registry")?;
        let provider = self
            .rpcs
            .iter()
            .find(|rpc| rpc.chain_id() == chain_id)
            .and_then(ChainRpc::provider)
            .ok_or_else(|| format!("{} has no RPC URL configured on this server", known.key()))?;
        let holder: Address = address
            .parse()
            .map_err(|_| "a stored address does not parse")?;
        let unavailable = |error: &dyn std::fmt::Display| {
            tracing::warn!(%error, chain = known.key(), "a payout wallet's balance could not be read");
            "the chain could not be asked; retry".to_owned()
        };
        let native = provider
            .get_balance(holder)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut balances = vec![TokenBalance {
            currency: known.native_symbol.clone(),
            token_address: None,
            amount: units(native, 18),
        }];
        for asset in &known.assets {
            let balance = IERC20::new(asset.address, provider)
                .balanceOf(holder)
                .call()
                .await
                .map_err(|e| unavailable(&e))?;
            balances.push(TokenBalance {
                currency: asset.symbol.clone(),
                token_address: Some(asset.address.to_checksum(None)),
                amount: units(balance, asset.decimals),
            });
        }
        Ok(balances)
    }
}

/// `value` base units as a decimal string with at least two decimals.
fn units(value: U256, decimals: u8) -> String {
    Amount::from_base_units(value).to_decimal_string_min(decimals, 2)
}
