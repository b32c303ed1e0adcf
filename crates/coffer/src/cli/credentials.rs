//! `coffer okx-key …` and `coffer gatepay-key …`: a merchant's credentials for the OKX-style
//! facilitator API and the GatePay-style payment API. Both groups create a credential whose
//! secret is shown once, and revoke one by its public id.

use clap::{Args, Subcommand};
use coffer_gateway::gatepay::GatePayCredentials;
use coffer_gateway::okx::{self, OkxCredentials};
use coffer_store::StoreError;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::cli::output::print_json_or_lines;
use crate::cli::store::{merchant_not_found, open_store, parse_merchant};
use crate::config::Config;
use crate::failure::Failure;

/// `coffer okx-key …`.
#[derive(Debug, Subcommand)]
pub enum OkxKeyAction {
    /// Create a credential; the secret and passphrase are printed once.
    Create(CreateArgs),
    /// Revoke a credential by its access key; it stops working at once.
    Revoke {
        /// The `OK-ACCESS-KEY`.
        access_key: String,
    },
}

/// `coffer gatepay-key …`.
#[derive(Debug, Subcommand)]
pub enum GatePayKeyAction {
    /// Create a credential; the secret is printed once.
    Create(CreateArgs),
    /// Revoke a credential by its ClientId; it stops working at once.
    Revoke {
        /// The `X-GatePay-Certificate-ClientId`.
        client_id: String,
    },
}

/// Whose credential to create and the output format, for `okx-key create` and
/// `gatepay-key create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The merchant's id (`mer_…`).
    #[arg(long)]
    pub merchant: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `coffer okx-key …`.
///
/// # Errors
/// [`Failure`] naming the merchant or credential that does not exist, or the database's error.
pub async fn okx_key_command(config: &Config, action: OkxKeyAction) -> Result<(), Failure> {
    let credentials = OkxCredentials::new(open_store(config).await?);
    match action {
        OkxKeyAction::Create(CreateArgs { merchant, json }) => {
            let merchant = parse_merchant(&merchant)?;
            let created = credentials
                .create(&merchant)
                .await
                .map_err(merchant_not_found(&merchant))?;
            let secret = okx::expose(&created.secret);
            let passphrase = okx::expose(&created.passphrase);
            print_json_or_lines(
                json,
                &json!({"access_key": created.access_key, "secret": secret, "passphrase": passphrase, "merchant_id": merchant}),
                &[
                    format!("OK-ACCESS-KEY        {}", created.access_key),
                    format!("secret (signing)     {secret}"),
                    format!("OK-ACCESS-PASSPHRASE {passphrase}"),
                    "store them now: the secret and passphrase are not shown again".to_owned(),
                ],
            );
            Ok(())
        }
        OkxKeyAction::Revoke { access_key } => revoked(
            credentials.revoke(&access_key).await,
            "OKX credential",
            &access_key,
        ),
    }
}

/// Runs `coffer gatepay-key …`.
///
/// # Errors
/// [`Failure`] naming the merchant or credential that does not exist, or the database's error.
pub async fn gatepay_key_command(config: &Config, action: GatePayKeyAction) -> Result<(), Failure> {
    let credentials = GatePayCredentials::new(open_store(config).await?);
    match action {
        GatePayKeyAction::Create(CreateArgs { merchant, json }) => {
            let merchant = parse_merchant(&merchant)?;
            let created = credentials
                .create(&merchant)
                .await
                .map_err(merchant_not_found(&merchant))?;
            let secret = created.secret.expose_secret();
            print_json_or_lines(
                json,
                &json!({"client_id": created.client_id, "secret": secret, "merchant_id": merchant}),
                &[
                    format!("X-GatePay-Certificate-ClientId {}", created.client_id),
                    format!("secret (HMAC-SHA512)           {secret}"),
                    "store it now: the secret is not shown again".to_owned(),
                ],
            );
            Ok(())
        }
        GatePayKeyAction::Revoke { client_id } => revoked(
            credentials.revoke(&client_id).await,
            "GatePay credential",
            &client_id,
        ),
    }
}

/// Reports a revocation of the credential `kind` named `id`: done, or no such credential.
fn revoked(outcome: Result<(), StoreError>, kind: &str, id: &str) -> Result<(), Failure> {
    outcome.map_err(|_| Failure::new(format!("no {kind} {id}")))?;
    println!("revoked {kind} {id}");
    Ok(())
}
