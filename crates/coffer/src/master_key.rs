//! The master key that encrypts secrets at rest, from the operator's side: `coffer secrets
//! generate-key | rotate | status`, and files only their owner can read (key files, `coffer
//! dev`'s summary and credentials), created with that mode rather than changed after writing.
//!
//! Rotation re-encrypts every stored secret under a new key in one database transaction: a
//! crash leaves either the old key or the new one valid for everything, and running the command
//! again finishes the job (values already under the new key are left alone). Legacy secrets
//! stored in plain text are encrypted by the same command, and by any Coffer process that opens
//! the database with a key.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use coffer_store::MasterKey;
use serde_json::json;

use crate::cli::Failure;
use crate::config::{Config, MASTER_KEY_HELP, read_master_key_file};

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
                        .map_err(|error| Failure::new(format!("--output: {error}")))?;
                    eprintln!("wrote master key {} to {}", key.id(), path.display());
                }
                None => println!("{text}"),
            }
            Ok(())
        }
        SecretsAction::Rotate { new_key_file, json } => {
            let new_key = read_master_key_file(&new_key_file)
                .map_err(|error| Failure::new(format!("--new-key-file: {error}")))?;
            let store = crate::cli::open_store(config).await?;
            if store.master_key_id() == Some(new_key.id()) {
                return Err(Failure::new(format!(
                    "--new-key-file: key {} is the configured master key already",
                    new_key.id()
                )));
            }
            let resealed = store.reseal_secrets(&new_key).await.map_err(|error| {
                Failure::new(format!("rotation failed, nothing changed: {error}"))
            })?;
            if json {
                crate::cli::print_json(&json!({
                    "resealed": resealed,
                    "master_key_id": new_key.id(),
                }));
            } else {
                println!(
                    "re-encrypted {resealed} secrets with master key {}",
                    new_key.id()
                );
                println!(
                    "next: set secrets.master_key_file = {:?} (or COFFER_MASTER_KEY) and restart \
                     every Coffer process; the old key no longer opens them",
                    new_key_file.display().to_string()
                );
            }
            Ok(())
        }
        SecretsAction::Status { json } => {
            let store = crate::cli::open_store(config).await?;
            let census = store
                .secrets_census()
                .await
                .map_err(|error| Failure::new(error.to_string()))?;
            let configured = store.master_key_id().map(str::to_owned);
            if json {
                crate::cli::print_json(&json!({
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

/// Creates `path` with `contents`, readable and writable by its owner only (mode 0600 from the
/// start). An existing file is replaced: written beside it under a temporary name, then renamed
/// over it.
///
/// # Errors
/// The I/O error, naming the file.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), String> {
    let fail = |error: std::io::Error| format!("cannot write {}: {error}", path.display());
    let partial = path.with_file_name(format!(
        ".{}.partial",
        path.file_name()
            .map_or_else(String::new, |name| name.to_string_lossy().into_owned())
    ));
    // A partial file left by a crash may have any mode: start it anew.
    match std::fs::remove_file(&partial) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(fail(error)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(fail)?;
    file.write_all(contents).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&partial, path).map_err(fail)
}

/// Creates `dir` (and its parents) for files only its owner may read: a new directory gets mode
/// 0700; an existing one open to others is narrowed to 0700.
///
/// # Errors
/// The I/O error, naming the directory.
pub fn create_private_dir(dir: &Path) -> Result<(), String> {
    let fail = |error: std::io::Error| format!("cannot create {}: {error}", dir.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let mode = std::fs::metadata(dir).map_err(fail)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(())
}

/// The master key kept in `dir` (`coffer dev`): read when it exists, else generated and
/// written there with mode 0600, so restarts reuse it.
///
/// # Errors
/// A message naming the file when it cannot be read or written.
pub fn dev_master_key(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("master.key");
    if !path.exists() {
        let (_, text) = MasterKey::generate();
        write_private_file(&path, format!("{text}\n").as_bytes())?;
    }
    read_master_key_file(&path)?;
    Ok(path)
}
