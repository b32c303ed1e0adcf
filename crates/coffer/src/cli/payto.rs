//! `coffer payto add | remove | list`: a merchant's x402 payTo addresses, whose settlements are
//! recorded as the merchant's orders.

use alloy::primitives::Address;
use clap::Subcommand;
use coffer_store::StoreError;
use serde_json::json;

use crate::cli::output::{print_json, print_table};
use crate::cli::store::{merchant_not_found, open_store, parse_merchant};
use crate::config::Config;
use crate::failure::Failure;

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

/// Runs `coffer payto …`.
///
/// # Errors
/// [`Failure`] naming the flag that is wrong, or the database's error.
pub async fn command(config: &Config, action: PayToAction) -> Result<(), Failure> {
    let registry = config.registry()?;
    let chain_of = |name: &str| {
        registry
            .by_name(name)
            .or_else(|| registry.by_caip2(name))
            .map(|chain| (chain.chain_id, chain.key().to_owned()))
            .ok_or_else(|| Failure::new(format!("--chain: unknown chain {name:?}")))
    };
    let address_of = |text: &str| {
        text.parse::<Address>()
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
                .map_err(merchant_not_found(&merchant))?;
            let row = coffer_store::PayToRow {
                chain_id,
                address: format!("{address:#x}"),
                merchant_id: merchant.clone(),
                created_at_ms: chrono::Utc::now().timestamp_millis(),
            };
            store.add_pay_to(&row).await.map_err(|error| match error {
                StoreError::Conflict(_) => Failure::new(format!(
                    "--address: {address} is another merchant's payTo on {key}"
                )),
                other => other.into(),
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
            let rows = store.pay_tos(&merchant).await?;
            let named: Vec<(String, String)> = rows
                .iter()
                .map(|row| {
                    let chain = registry
                        .by_chain_id(row.chain_id)
                        .map_or_else(|| row.chain_id.to_string(), |c| c.key().to_owned());
                    let address = row
                        .address
                        .parse::<Address>()
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
                let rows: Vec<Vec<String>> = named
                    .into_iter()
                    .map(|(chain, address)| vec![chain, address])
                    .collect();
                print_table(&["CHAIN", "PAYTO"], &rows);
            }
        }
    }
    Ok(())
}
