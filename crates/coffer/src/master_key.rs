//! The master key's files: files only their owner can read (key files, `coffer dev`'s summary
//! and credentials), created with that mode rather than changed after writing, and the master
//! key `coffer dev` keeps in its data directory. The `coffer secrets` commands that make and
//! rotate the key are in `cli::secrets`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use coffer_store::MasterKey;

use crate::config::read_master_key_file;

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
