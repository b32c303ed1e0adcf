//! `coffer secrets generate-key | rotate | status`: the master key that encrypts secrets at
//! rest, from the operator's side.
//!
//! Rotation re-encrypts every stored secret under a new key in one database transaction: a
//! crash leaves either the old key or the new one valid for everything, and running the command
//! again finishes the job (values already under the new key are left alone). Legacy secrets
//! stored in plain text are encrypted by the same command, and by any Coffer process that opens
//! the database with a key.

use std::path::PathBuf;

use clap::Subcommand;
use coffer_store::MasterKey;
use serde_json::json;

use crate::cli::output::{print_json, print_json_or_lines};
use crate::cli::store::open_store;
use crate::config::{Config, MASTER_KEY_HELP, read_master_key_file};
use crate::failure::Failure;
use crate::master_key::write_private_file;

/// `coffer secrets …`.
#[derive(Debug, Subcommand)]
pub enum SecretsAction {
    /// Print a new random master key (base64 of 32 bytes). Redirect it into a file only you
    /// can read: `(umask 077; coffer secrets generate-key > master.key)`, or use --output.
    GenerateKey {
        /// Write the key to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Re-encrypt every stored secret with a new master key, in one transaction; the current
    /// key comes from the configuration. Then point secrets.master_key_file (or
    /// COFFER_MASTER_KEY) at the new key and restart Coffer.
    Rotate {
        /// A file holding the new key (from `coffer secrets generate-key`), readable only by
        /// its owner.
        #[arg(long, value_name = "PATH")]
        new_key_file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// How the stored secrets are encrypted: how many under which key id, and how many still
    /// in plain text.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `coffer secrets …`.
///
/// # Errors
/// [`Failure`] naming what went wrong (a key file, the database, a secret that does not open).
pub async fn command(config: &Config, action: SecretsAction) -> Result<(), Failure> {
    match action {
        SecretsAction::GenerateKey { output } => {
            let (key, text) = MasterKey::generate();
            match output {
                Some(path) => {
                    write_private_file(&path, format!("{text}\n").as_bytes())
                        .map_err(Failure::context("--output"))?;
                    eprintln!("wrote master key {} to {}", key.id(), path.display());
                }
                None => println!("{text}"),
            }
            Ok(())
        }
        SecretsAction::Rotate { new_key_file, json } => {
            let new_key =
                read_master_key_file(&new_key_file).map_err(Failure::context("--new-key-file"))?;
            let store = open_store(config).await?;
            if store.master_key_id() == Some(new_key.id()) {
                return Err(Failure::new(format!(
                    "--new-key-file: key {} is the configured master key already",
                    new_key.id()
                )));
            }
            let resealed = store
                .reseal_secrets(&new_key)
                .await
                .map_err(Failure::context("rotation failed, nothing changed"))?;
            print_json_or_lines(
                json,
                &json!({
                    "resealed": resealed,
                    "master_key_id": new_key.id(),
                }),
                &[
                    format!(
                        "re-encrypted {resealed} secrets with master key {}",
                        new_key.id()
                    ),
                    format!(
                        "next: set secrets.master_key_file = {:?} (or COFFER_MASTER_KEY) and \
                         restart every Coffer process; the old key no longer opens them",
                        new_key_file.display().to_string()
                    ),
                ],
            );
            Ok(())
        }
        SecretsAction::Status { json } => {
            let store = open_store(config).await?;
            let census = store.secrets_census().await?;
            let configured = store.master_key_id().map(str::to_owned);
            if json {
                print_json(&json!({
                    "master_key_id": configured,
                    "plain": census.plain,
                    "sealed": census.sealed,
                }));
            } else {
                match &configured {
                    Some(id) => println!("configured master key: {id}"),
                    None => println!("no master key configured; {MASTER_KEY_HELP}"),
                }
                println!("secrets stored: {}", census.total());
                for (id, count) in &census.sealed {
                    let mark = if Some(id) == configured.as_ref() {
                        " (configured)"
                    } else {
                        ""
                    };
                    println!("  encrypted with key {id}{mark}: {count}");
                }
                if census.plain > 0 {
                    println!("  in plain text: {}", census.plain);
                }
            }
            Ok(())
        }
    }
}
