//! `coffer payout-wallet new | import | list`: a merchant's hot wallet per chain, the account
//! refunds and payouts go out from. The key is made here (or read from standard input), stored
//! sealed with the master key, and never printed: only the address is.

use std::sync::Arc;

use alloy::hex;
use clap::{Args, Subcommand};
use coffer_gateway::payout_wallets::{PayoutWalletError, PayoutWallets};
use secrecy::SecretString;
use serde_json::json;

use crate::cli::output::{print_json, print_json_or_lines, print_table};
use crate::cli::signer::read_private_key;
use crate::cli::store::{merchant_not_found, open_store, parse_merchant};
use crate::config::Config;
use crate::failure::Failure;

/// Whose wallet, on which chain, and how to print it: `new` and `import` take the same.
#[derive(Debug, Args)]
pub struct WalletFor {
    /// The merchant's id (`mer_…`).
    #[arg(long)]
    merchant: String,
    /// The chain (a key such as `base-sepolia`, or any name the registry knows).
    #[arg(long)]
    chain: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `coffer payout-wallet …`.
#[derive(Debug, Subcommand)]
pub enum PayoutWalletAction {
    /// Make a new wallet for the merchant on a chain (its key is generated and sealed).
    New(WalletFor),
    /// Import an existing key, read from standard input, as the merchant's wallet on a chain.
    Import(WalletFor),
    /// List the merchant's wallets (addresses only).
    List {
        /// The merchant's id (`mer_…`).
        #[arg(long)]
        merchant: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `coffer payout-wallet …`.
///
/// # Errors
/// [`Failure`] naming the flag that is wrong, or the database's error.
pub async fn command(config: &Config, action: PayoutWalletAction) -> Result<(), Failure> {
    let store = open_store(config).await?;
    let wallets = PayoutWallets::new(
        store.clone(),
        Arc::new(config.registry()?),
        Arc::new(Vec::new()),
    );
    let told = |error: PayoutWalletError| match error {
        PayoutWalletError::Store(error) => Failure::from(error),
        other => Failure::new(other.to_string()),
    };
    let imported = matches!(action, PayoutWalletAction::Import(_));
    match action {
        PayoutWalletAction::New(target) | PayoutWalletAction::Import(target) => {
            let merchant = existing_merchant(&*store, &target.merchant).await?;
            let address = if imported {
                let signer = read_private_key()?;
                let key = SecretString::from(format!("0x{}", hex::encode(signer.to_bytes())));
                wallets.import(&merchant, &target.chain, &key).await
            } else {
                wallets.create(&merchant, &target.chain).await
            }
            .map_err(told)?;
            made(target.json, &merchant.to_string(), &target.chain, address);
        }
        PayoutWalletAction::List { merchant, json } => {
            let merchant = parse_merchant(&merchant)?;
            let listed = wallets.list(&merchant).await.map_err(told)?;
            if json {
                let rows: Vec<_> = listed
                    .iter()
                    .map(|(chain, chain_id, address)| json!({"chain": chain, "chain_id": chain_id, "address": address}))
                    .collect();
                print_json(&json!(rows));
            } else {
                let rows: Vec<Vec<String>> = listed
                    .into_iter()
                    .map(|(chain, chain_id, address)| vec![chain, chain_id.to_string(), address])
                    .collect();
                print_table(&["CHAIN", "CHAIN ID", "ADDRESS"], &rows);
            }
        }
    }
    Ok(())
}

/// `--merchant`, which must name a merchant that exists.
async fn existing_merchant(
    store: &dyn coffer_store::Store,
    text: &str,
) -> Result<coffer_core::MerchantId, Failure> {
    let merchant = parse_merchant(text)?;
    store
        .merchant(&merchant)
        .await
        .map_err(merchant_not_found(&merchant))?;
    Ok(merchant)
}

fn made(json: bool, merchant: &str, chain: &str, address: alloy::primitives::Address) {
    let address = address.to_checksum(None);
    print_json_or_lines(
        json,
        &json!({"merchant_id": merchant, "chain": chain, "address": address}),
        &[
            format!("payout wallet of {merchant} on {chain}: {address}"),
            "next: fund it with the chain's gas coin and the tokens it will pay out".to_owned(),
        ],
    );
}
