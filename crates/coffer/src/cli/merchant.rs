//! `coffer merchant create | list`.

use std::sync::Arc;

use clap::Subcommand;
use coffer_gateway::merchants::{MerchantError, Merchants};
use serde_json::json;

use crate::cli::output::{print_json, print_json_or_lines, print_table};
use crate::cli::store::open_store;
use crate::config::Config;
use crate::failure::Failure;

/// `coffer merchant …`.
#[derive(Debug, Subcommand)]
pub enum MerchantAction {
    /// Create a merchant; prints its id and webhook secret.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Default webhook endpoint.
        #[arg(long)]
        webhook_url: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List merchants.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `coffer merchant …`.
///
/// # Errors
/// [`Failure`] when the database cannot be used or the webhook URL is refused.
pub async fn command(config: &Config, action: MerchantAction) -> Result<(), Failure> {
    let merchants = Merchants::new(open_store(config).await?)
        .with_outbound_policy(Arc::new(config.outbound.policy()?));
    match action {
        MerchantAction::Create {
            name,
            webhook_url,
            json,
        } => {
            let merchant = merchants
                .create(&name, webhook_url.as_deref())
                .await
                .map_err(|error| match error {
                    MerchantError::UrlNotAllowed { refusal, .. } => {
                        Failure::new(format!("--webhook-url: {refusal}"))
                    }
                    other => other.into(),
                })?;
            print_json_or_lines(
                json,
                &json!({
                    "id": merchant.id,
                    "name": merchant.name,
                    "webhook_url": merchant.webhook_url,
                    "webhook_secret": merchant.webhook_secret,
                }),
                &[
                    format!("created merchant {} ({})", merchant.id, merchant.name),
                    format!("webhook secret: {}", merchant.webhook_secret),
                    format!("next: coffer key create --merchant {}", merchant.id),
                ],
            );
        }
        MerchantAction::List { json } => {
            let all = merchants.list().await?;
            if json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|m| json!({"id": m.id, "name": m.name, "webhook_url": m.webhook_url, "created_at": m.created_at}))
                    .collect();
                print_json(&json!(rows));
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|m| {
                        vec![
                            m.id.to_string(),
                            m.created_at
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            m.webhook_url.clone().unwrap_or_else(|| "-".to_owned()),
                            m.name.clone(),
                        ]
                    })
                    .collect();
                print_table(&["ID", "CREATED", "WEBHOOK", "NAME"], &rows);
            }
        }
    }
    Ok(())
}
