//! Secrets at rest: merchants' webhook secrets and the HMAC secrets of GatePay and OKX
//! credentials are stored encrypted under a master key that never enters the database.
//!
//! The store seals a secret when it writes it and opens it when it reads it, so callers see
//! plain values in row types (which print `***`) and no caller can forget either step. Each
//! value is sealed with ChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`), a fresh random
//! 96-bit nonce, and associated data naming its table, column and primary key: a ciphertext
//! copied onto another row — another merchant's — does not open. The stored text is versioned
//! and names the key it was sealed with:
//!
//! ```text
//! enc:v1:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>
//! ```
//!
//! The key id is the first 4 bytes (8 hex digits) of SHA-256 over a fixed label and the key:
//! it tells which key a value needs without revealing anything about the key.
//!
//! A [`Sealer`] holds the master key a store was opened with ([`Sealer::none`] when none was
//! configured: nothing secret can then be written or read). Values written before encryption
//! existed are sealed when a store with a key opens the database; afterwards a value that is
//! not sealed is refused, so plain text written into the database cannot stand in for a
//! secret.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The prefix of every sealed value of the current format.
const SEALED_PREFIX: &str = "enc:v1:";
/// Bytes of a ChaCha20-Poly1305 nonce.
const NONCE_LEN: usize = 12;
/// Bytes of a master key.
pub const MASTER_KEY_LEN: usize = 32;

/// A column holding secrets: where a sealed value belongs (part of its associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretColumn {
    /// The table.
    pub table: &'static str,
    /// The column.
    pub column: &'static str,
    /// The primary key column of the table.
    pub key_column: &'static str,
    /// What the secret is, for messages.
    pub what: &'static str,
}

/// `merchants.webhook_secret`, keyed by merchant id.
pub const MERCHANT_WEBHOOK_SECRET: SecretColumn = SecretColumn {
    table: "merchants",
    column: "webhook_secret",
    key_column: "id",
    what: "merchant webhook secret",
};

/// `gatepay_credentials.secret`, keyed by client id.
pub const GATEPAY_SECRET: SecretColumn = SecretColumn {
    table: "gatepay_credentials",
    column: "secret",
    key_column: "client_id",
    what: "GatePay credential secret",
};

/// `okx_credentials.secret`, keyed by access key.
pub const OKX_SECRET: SecretColumn = SecretColumn {
    table: "okx_credentials",
    column: "secret",
    key_column: "access_key",
    what: "OKX credential secret",
};

/// `payout_wallets.private_key`, keyed by wallet id (`<merchant id>:<chain id>`).
pub const PAYOUT_WALLET_KEY: SecretColumn = SecretColumn {
    table: "payout_wallets",
    column: "private_key",
    key_column: "wallet_id",
    what: "payout wallet key",
};

/// Every column that holds secrets.
pub const SECRET_COLUMNS: [SecretColumn; 4] = [
    MERCHANT_WEBHOOK_SECRET,
    GATEPAY_SECRET,
    OKX_SECRET,
    PAYOUT_WALLET_KEY,
];

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No master key was configured, and secrets are only stored encrypted.
    #[error(
        "no master key is configured (secrets.master_key_file or COFFER_MASTER_KEY): secrets are \
         stored encrypted with one; `coffer secrets generate-key` makes one"
    )]
    NoMasterKey,
    /// The value was sealed with another master key than the ones configured.
    #[error(
        "a {what} is sealed with master key {key_id}, which is not configured (configured: {configured})"
    )]
    UnknownKey {
        /// Which secret.
        what: &'static str,
        /// The key id the value names.
        key_id: String,
        /// The configured key ids.
        configured: String,
    },
    /// The value does not decrypt: altered, or moved from another row.
    #[error("a {what} does not decrypt: it was altered or belongs to another row")]
    Tampered {
        /// Which secret.
        what: &'static str,
    },
    /// The value is stored in plain text where a sealed one was expected.
    #[error("a {what} is stored unencrypted; reopen with the master key to encrypt it")]
    Unsealed {
        /// Which secret.
        what: &'static str,
    },
    /// The value is not in a format this version reads.
    #[error("a {what} is malformed: {detail}")]
    Malformed {
        /// Which secret.
        what: &'static str,
        /// What is wrong.
        detail: &'static str,
    },
    /// A master key in configuration is not usable.
    #[error("{0}")]
    InvalidKey(String),
}

/// A 32-byte master key and its id. `Debug` shows only the id.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: ChaCha20Poly1305,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; MASTER_KEY_LEN]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"coffer master key id\0")
            .chain_update(bytes)
            .finalize();
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        MasterKey {
            id,
            cipher: ChaCha20Poly1305::new(bytes.into()),
        }
    }

    /// Parses a key written as base64 (standard, padded or not) or as 64 hex digits; blanks
    /// around it are ignored.
    ///
    /// # Errors
    /// [`SecretError::InvalidKey`] when the text is not 32 bytes in either form.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let is_hex =
            text.len() == 2 * MASTER_KEY_LEN && text.chars().all(|c| c.is_ascii_hexdigit());
        let bytes = if is_hex {
            (0..MASTER_KEY_LEN)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| STANDARD_NO_PAD.decode(text))
                .ok()
        };
        let bytes: [u8; MASTER_KEY_LEN] = bytes
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                SecretError::InvalidKey(format!(
                    "a master key is {MASTER_KEY_LEN} random bytes written as base64 or hex"
                ))
            })?;
        Ok(MasterKey::from_bytes(&bytes))
    }

    /// A new random key and its text form (base64), as `coffer secrets generate-key` prints it.
    pub fn generate() -> (Self, String) {
        let mut bytes = [0u8; MASTER_KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        let key = MasterKey::from_bytes(&bytes);
        bytes.fill(0);
        (key, text)
    }

    /// The key's id (8 hex digits), which sealed values name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plain` for the row `row_key` of `column`.
    ///
    /// # Errors
    /// [`SecretError::Malformed`] only if the cipher refuses (it does not for any input).
    pub fn seal(
        &self,
        column: SecretColumn,
        row_key: &str,
        plain: &str,
    ) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(column, row_key);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Malformed {
                what: column.what,
                detail: "the cipher refused to seal it",
            })?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED_PREFIX}{}:{}",
            self.id,
            STANDARD_NO_PAD.encode(bytes)
        ))
    }

    fn open(&self, column: SecretColumn, row_key: &str, body: &str) -> Result<String, SecretError> {
        let malformed = |detail| SecretError::Malformed {
            what: column.what,
            detail,
        };
        let bytes = STANDARD_NO_PAD
            .decode(body)
            .map_err(|_| malformed("not base64"))?;
        if bytes.len() < NONCE_LEN {
            return Err(malformed("too short"));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| malformed("too short"))?;
        let aad = associated_data(column, row_key);
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Tampered { what: column.what })?;
        String::from_utf8(plain).map_err(|_| malformed("not UTF-8 text"))
    }
}

/// What binds a sealed value to its row: format version, table, column, primary key.
fn associated_data(column: SecretColumn, row_key: &str) -> Vec<u8> {
    format!(
        "coffer secret v1\0{}\0{}\0{row_key}",
        column.table, column.column
    )
    .into_bytes()
}

/// The key id a stored value names, or `None` when it is not sealed (plain text).
pub fn sealed_key_id(stored: &str) -> Option<&str> {
    stored
        .strip_prefix(SEALED_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .map(|(key_id, _)| key_id)
}

/// Seals and opens the secret columns with the master key a store was opened with.
#[derive(Clone, Default)]
pub struct Sealer {
    key: Option<Arc<MasterKey>>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id())
            .finish()
    }
}

impl Sealer {
    /// A sealer with `key`.
    pub fn new(key: MasterKey) -> Self {
        Sealer {
            key: Some(Arc::new(key)),
        }
    }

    /// A sealer without a key: sealing and opening fail with [`SecretError::NoMasterKey`].
    pub fn none() -> Self {
        Sealer { key: None }
    }

    /// The id of the key, if there is one.
    pub fn key_id(&self) -> Option<&str> {
        self.key.as_deref().map(MasterKey::id)
    }

    /// The key, if there is one.
    pub fn key(&self) -> Option<&MasterKey> {
        self.key.as_deref()
    }

    /// Seals a secret for the row `row_key` of `column`.
    ///
    /// # Errors
    /// [`SecretError::NoMasterKey`] without a key.
    pub fn seal(
        &self,
        column: SecretColumn,
        row_key: &str,
        plain: &str,
    ) -> Result<String, SecretError> {
        self.key
            .as_deref()
            .ok_or(SecretError::NoMasterKey)?
            .seal(column, row_key, plain)
    }

    /// Opens a stored secret of the row `row_key` of `column`.
    ///
    /// # Errors
    /// [`SecretError::NoMasterKey`] without a key; [`SecretError::Unsealed`] for a value in
    /// plain text; [`SecretError::UnknownKey`] for a value sealed with another key;
    /// [`SecretError::Tampered`] when it does not decrypt (altered, or another row's).
    pub fn open(
        &self,
        column: SecretColumn,
        row_key: &str,
        stored: &str,
    ) -> Result<String, SecretError> {
        open_with(self.key.as_deref().into_iter(), column, row_key, stored)
    }
}

/// Opens `stored` with whichever of `keys` it names.
pub(crate) fn open_with<'k>(
    keys: impl Iterator<Item = &'k MasterKey> + Clone,
    column: SecretColumn,
    row_key: &str,
    stored: &str,
) -> Result<String, SecretError> {
    let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
        if keys.clone().next().is_none() {
            return Err(SecretError::NoMasterKey);
        }
        return Err(SecretError::Unsealed { what: column.what });
    };
    let (key_id, body) = rest.split_once(':').ok_or(SecretError::Malformed {
        what: column.what,
        detail: "no key id",
    })?;
    if keys.clone().next().is_none() {
        return Err(SecretError::NoMasterKey);
    }
    let key =
        keys.clone()
            .find(|key| key.id() == key_id)
            .ok_or_else(|| SecretError::UnknownKey {
                what: column.what,
                key_id: key_id.to_owned(),
                configured: keys.map(MasterKey::id).collect::<Vec<_>>().join(", "),
            })?;
    key.open(column, row_key, body)
}

/// How the stored secrets are sealed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretsCensus {
    /// Secrets stored in plain text (written before encryption existed).
    pub plain: u64,
    /// Sealed secrets by the id of their key.
    pub sealed: std::collections::BTreeMap<String, u64>,
}

impl SecretsCensus {
    /// Every secret stored.
    pub fn total(&self) -> u64 {
        self.plain + self.sealed.values().sum::<u64>()
    }

    /// Sealed secrets whose key is not `key_id` (all sealed ones when `None`).
    pub fn sealed_with_other_keys(&self, key_id: Option<&str>) -> u64 {
        self.sealed
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != key_id)
            .map(|(_, count)| count)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn key() -> MasterKey {
        MasterKey::generate().0
    }

    #[test]
    fn a_sealed_secret_opens_only_in_its_own_row_and_column() {
        let sealer = Sealer::new(key());
        let sealed = sealer
            .seal(MERCHANT_WEBHOOK_SECRET, "mer_a", "whsec_SEKRET")
            .unwrap();
        assert!(sealed.starts_with(&format!("enc:v1:{}:", sealer.key_id().unwrap())));
        assert!(!sealed.contains("SEKRET"));
        assert_eq!(
            sealer
                .open(MERCHANT_WEBHOOK_SECRET, "mer_a", &sealed)
                .unwrap(),
            "whsec_SEKRET"
        );
        assert_eq!(
            sealer.open(MERCHANT_WEBHOOK_SECRET, "mer_b", &sealed),
            Err(SecretError::Tampered {
                what: MERCHANT_WEBHOOK_SECRET.what
            })
        );
        assert!(matches!(
            sealer.open(GATEPAY_SECRET, "mer_a", &sealed),
            Err(SecretError::Tampered { .. })
        ));
        // Two seals of one secret differ (fresh nonce).
        assert_ne!(
            sealed,
            sealer
                .seal(MERCHANT_WEBHOOK_SECRET, "mer_a", "whsec_SEKRET")
                .unwrap()
        );
    }

    #[test]
    fn a_flipped_bit_an_unknown_key_plain_text_and_no_key_are_refused() {
        let sealer = Sealer::new(key());
        let sealed = sealer.seal(OKX_SECRET, "ak", "S").unwrap();
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).unwrap();
        assert!(matches!(
            sealer.open(OKX_SECRET, "ak", &altered),
            Err(SecretError::Tampered { .. } | SecretError::Malformed { .. })
        ));
        let other = Sealer::new(key()).seal(OKX_SECRET, "ak", "S").unwrap();
        assert!(matches!(
            sealer.open(OKX_SECRET, "ak", &other),
            Err(SecretError::UnknownKey { .. })
        ));
        assert!(matches!(
            sealer.open(OKX_SECRET, "ak", "plain"),
            Err(SecretError::Unsealed { .. })
        ));
        assert_eq!(
            Sealer::none().open(OKX_SECRET, "ak", &other),
            Err(SecretError::NoMasterKey)
        );
        assert_eq!(
            Sealer::none().seal(OKX_SECRET, "ak", "S"),
            Err(SecretError::NoMasterKey)
        );
    }

    #[test]
    fn keys_parse_from_base64_or_hex_and_print_only_their_id() {
        let (key, text) = MasterKey::generate();
        let parsed = MasterKey::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(parsed.id(), key.id());
        let hex = "00".repeat(32);
        assert_eq!(
            MasterKey::parse(&hex).unwrap().id(),
            MasterKey::from_bytes(&[0; 32]).id()
        );
        assert!(MasterKey::parse("c2hvcnQ=").is_err());
        assert!(MasterKey::parse("").is_err());
        let printed = format!("{key:?} {:?}", Sealer::new(key.clone()));
        assert!(!printed.contains(&text) && printed.contains(key.id()));
        let sealed = key.seal(GATEPAY_SECRET, "c", "x").unwrap();
        assert_eq!(sealed_key_id(&sealed), Some(key.id()));
        assert_eq!(sealed_key_id("plain"), None);
    }
}
