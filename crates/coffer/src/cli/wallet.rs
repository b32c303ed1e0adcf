//! `coffer wallet set`: a merchant's deposit wallet, an extended public key whose children
//! become deposit addresses.

use clap::Subcommand;

use crate::cli::store::{merchant_not_found, open_store, parse_merchant};
use crate::config::Config;
use crate::failure::Failure;

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

/// Runs `coffer wallet …`.
///
/// # Errors
/// [`Failure`] naming the flag that is wrong, or the database's error.
pub async fn command(config: &Config, action: WalletAction) -> Result<(), Failure> {
    match action {
        WalletAction::Set {
            merchant,
            xpub,
            chain,
        } => {
            let merchant = parse_merchant(&merchant)?;
            let key =
                coffer_evm::hd::DepositKey::parse(&xpub).map_err(Failure::context("--xpub"))?;
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
                .map_err(merchant_not_found(&merchant))?;
            let now = chrono::Utc::now().timestamp_millis();
            let wallet = store.set_wallet(&merchant, chain_id, &xpub, now).await?;
            let first = key
                .address(wallet.next_index)
                .map_err(|error| Failure::new(error.to_string()))?;
            let scope = chain.as_deref().unwrap_or("every EVM chain");
            println!("deposit wallet set for {merchant} on {scope}; next deposit address {first}");
        }
    }
    Ok(())
}
