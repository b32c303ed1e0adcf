//! `coffer key create | list | revoke`: merchants' API keys.

use clap::Subcommand;
use coffer_gateway::merchants::{MerchantError, Merchants};
use coffer_store::StoreError;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::cli::output::{print_json, print_json_or_lines, print_table};
use crate::cli::store::{merchant_not_found, open_store, parse_merchant};
use crate::config::Config;
use crate::failure::Failure;

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

/// Runs `coffer key …`.
///
/// # Errors
/// [`Failure`] naming the merchant or key that does not exist, or the database's error.
pub async fn command(config: &Config, action: KeyAction) -> Result<(), Failure> {
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
                        MerchantError::Store(error) => merchant_not_found(&merchant)(error),
                        other => other.into(),
                    })?;
            let key = created.key.expose_secret();
            print_json_or_lines(
                json,
                &json!({"id": created.row.id, "merchant_id": merchant, "label": created.row.label, "key": key}),
                &[
                    format!("created API key {} for {merchant}", created.row.id),
                    format!("key: {key}"),
                    "store it now: Coffer keeps only its hash and cannot show it again".to_owned(),
                ],
            );
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
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        let state = if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        };
                        vec![
                            k.id.to_string(),
                            k.merchant_id.to_string(),
                            state.to_owned(),
                            k.label.clone(),
                        ]
                    })
                    .collect();
                print_table(&["ID", "MERCHANT", "STATE", "LABEL"], &rows);
            }
        }
        KeyAction::Revoke { id } => {
            let row = merchants
                .revoke_key(&id)
                .await
                .map_err(|error| match error {
                    MerchantError::Store(StoreError::NotFound(_)) => {
                        Failure::new(format!("no API key {id}"))
                    }
                    other => other.into(),
                })?;
            println!("revoked API key {} of {}", row.id, row.merchant_id);
        }
    }
    Ok(())
}
