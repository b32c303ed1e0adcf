//! `coffer signer new | import`: encrypted V3 JSON keystores of x402 settlement signers.

use std::path::{Path, PathBuf};

use alloy::signers::local::PrivateKeySigner;
use clap::{Args, Subcommand};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::cli::output::print_json_or_lines;
use crate::config::Config;
use crate::failure::Failure;

/// `coffer signer …`. The password comes from `--password-file`, else from the configured
/// `x402.signer_keystore_password_file`, else from the environment variable named by
/// `x402.signer_keystore_password_env` (`COFFER_SIGNER_KEYSTORE_PASSWORD`): never from the
/// command line, where other users and shell history could read it.
#[derive(Debug, Subcommand)]
pub enum SignerAction {
    /// Create a new random settlement key in an encrypted V3 JSON keystore; prints its
    /// address (fund it with gas, then add the file to `x402.signer_keystores`).
    New(KeystoreArgs),
    /// Encrypt an existing private key, read from standard input (0x hex), into a V3 JSON
    /// keystore; prints its address.
    Import(KeystoreArgs),
}

/// The keystore to write, its password and the output format, for `signer new` and
/// `signer import`.
#[derive(Debug, Args)]
pub struct KeystoreArgs {
    /// The keystore file to write (it must not exist).
    #[arg(long, value_name = "PATH")]
    pub keystore: PathBuf,
    /// A file whose first line is the password.
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `coffer signer …`.
///
/// # Errors
/// [`Failure`] when the keystore exists or cannot be written, the key on standard input is not
/// one, or no password is configured.
pub fn command(config: &Config, action: SignerAction) -> Result<(), Failure> {
    let (args, imported) = match action {
        SignerAction::New(args) => (args, None),
        SignerAction::Import(args) => (args, Some(read_private_key()?)),
    };
    let KeystoreArgs {
        keystore,
        password_file,
        json,
    } = args;
    if keystore.exists() {
        return Err(Failure::new(format!(
            "--keystore: {} exists; Coffer never overwrites a keystore",
            keystore.display()
        )));
    }
    let mut source = config.x402.clone();
    if password_file.is_some() {
        source.signer_keystore_password_file = password_file;
    }
    let password = source.keystore_password()?;
    let name = keystore
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| Failure::new("--keystore: name a file"))?;
    let dir = keystore
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(Failure::context(format!("--keystore: {}", dir.display())))?;
    let key = imported.unwrap_or_else(PrivateKeySigner::random);
    let (signer, _uuid) = PrivateKeySigner::encrypt_keystore(
        dir,
        &mut rand_08::thread_rng(),
        key.to_bytes(),
        password.expose_secret().as_bytes(),
        Some(name),
    )
    .map_err(Failure::context(format!(
        "--keystore: {}",
        keystore.display()
    )))?;
    restrict_to_owner(&keystore)?;
    let address = signer.address().to_checksum(None);
    print_json_or_lines(
        json,
        &json!({"address": address, "keystore": keystore}),
        &[
            format!("wrote {}: settlement signer {address}", keystore.display()),
            "next: fund it with gas and add the file to x402.signer_keystores".to_owned(),
        ],
    );
    Ok(())
}

/// Reads one private key (0x hex) from standard input.
pub(crate) fn read_private_key() -> Result<PrivateKeySigner, Failure> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("private key (0x hex): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(Failure::context("cannot read the private key"))?;
    let key = line.trim().parse();
    line.clear();
    key.map_err(|_| Failure::new("standard input: not a 32-byte hex private key"))
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(Failure::context(format!("--keystore: {}", path.display())))
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> Result<(), Failure> {
    Ok(())
}
