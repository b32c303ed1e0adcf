//! Deposit addresses from a merchant's extended public key (BIP-32).
//!
//! Each order gets the non-hardened child `index` of the merchant's xpub (conventionally the
//! account-level key at `m/44'/60'/account'/0`). Deriving needs only the public key: Coffer
//! never holds the merchant's private key for deposit addresses; the merchant's own wallet,
//! holding the seed, sees and spends the funds.

use alloy::primitives::{Address, keccak256};
use alloy::signers::local::coins_bip39::{English, Mnemonic};
use coins_bip32::enc::{MainnetEncoder, XKeyEncoder};
use coins_bip32::primitives::Hint;
use coins_bip32::xkeys::{Parent, XPriv, XPub};

/// Why an extended public key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HdError {
    /// Not a base58 `xpub…` string.
    #[error("not a valid extended public key (xpub…): {0}")]
    InvalidXpub(String),
    /// Only non-hardened children can be derived from a public key.
    #[error("child index {0} is hardened; deposit addresses use indexes below 2^31")]
    HardenedIndex(u32),
    /// Derivation failed (astronomically unlikely for a valid key).
    #[error("derivation failed: {0}")]
    Derivation(String),
}

/// A merchant's watch-only deposit key.
#[derive(Clone)]
pub struct DepositKey {
    xpub: XPub,
}

impl std::fmt::Debug for DepositKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepositKey")
            .field("fingerprint", &self.xpub.fingerprint())
            .finish()
    }
}

impl DepositKey {
    /// Parses a base58 `xpub…`.
    ///
    /// # Errors
    /// [`HdError::InvalidXpub`] for anything else (an `xprv` is refused too: Coffer must not
    /// be handed private keys for deposits).
    pub fn parse(text: &str) -> Result<Self, HdError> {
        let text = text.trim();
        if !text.starts_with("xpub") {
            return Err(HdError::InvalidXpub(
                "expected a string starting with \"xpub\"".to_owned(),
            ));
        }
        MainnetEncoder::xpub_from_base58(text)
            .map(|xpub| DepositKey { xpub })
            .map_err(|error| HdError::InvalidXpub(error.to_string()))
    }

    /// The key as base58.
    ///
    /// # Errors
    /// [`HdError::Derivation`] if encoding fails.
    pub fn to_base58(&self) -> Result<String, HdError> {
        MainnetEncoder::xpub_to_base58(&self.xpub)
            .map_err(|error| HdError::Derivation(error.to_string()))
    }

    /// The deposit address of child `index`.
    ///
    /// # Errors
    /// [`HdError::HardenedIndex`] for `index ≥ 2^31`.
    pub fn address(&self, index: u32) -> Result<Address, HdError> {
        if index >= 1 << 31 {
            return Err(HdError::HardenedIndex(index));
        }
        let child = self
            .xpub
            .derive_child(index)
            .map_err(|error| HdError::Derivation(error.to_string()))?;
        let key: &coins_bip32::ecdsa::VerifyingKey = child.as_ref();
        let point = key.to_encoded_point(false);
        let hash = keccak256(&point.as_bytes()[1..]);
        Ok(Address::from_slice(&hash[12..]))
    }
}

/// The BIP-32 path of the dev deposit account: account 1, so its addresses never collide with
/// anvil's funded accounts (account 0).
pub const DEV_DEPOSIT_PATH: &str = "m/44'/60'/1'/0";

/// The xpub `coffer dev` gives its demo merchant, derived from the public dev mnemonic.
///
/// # Errors
/// [`HdError::Derivation`] if derivation fails.
pub fn dev_deposit_key(mnemonic: &str) -> Result<DepositKey, HdError> {
    let mnemonic = Mnemonic::<English>::new_from_phrase(mnemonic)
        .map_err(|error| HdError::Derivation(error.to_string()))?;
    let seed = mnemonic
        .to_seed(None)
        .map_err(|error| HdError::Derivation(error.to_string()))?;
    let xpriv = XPriv::root_from_seed(&seed, Some(Hint::Legacy))
        .and_then(|root| root.derive_path(DEV_DEPOSIT_PATH))
        .map_err(|error| HdError::Derivation(error.to_string()))?;
    Ok(DepositKey {
        xpub: xpriv.verify_key(),
    })
}

#[cfg(test)]
mod tests {
    use alloy::signers::local::{MnemonicBuilder, coins_bip39::English};

    use super::*;
    use crate::testnet::DEV_MNEMONIC;

    #[test]
    fn watch_only_children_match_the_private_derivation() {
        let key = dev_deposit_key(DEV_MNEMONIC).unwrap();
        let reparsed = DepositKey::parse(&key.to_base58().unwrap()).unwrap();
        for index in [0u32, 1, 7, 1000] {
            let signer = MnemonicBuilder::<English>::default()
                .phrase(DEV_MNEMONIC)
                .derivation_path(format!("{DEV_DEPOSIT_PATH}/{index}"))
                .unwrap()
                .build()
                .unwrap();
            assert_eq!(
                reparsed.address(index).unwrap(),
                signer.address(),
                "child {index}"
            );
        }
        assert_ne!(key.address(0).unwrap(), key.address(1).unwrap());
    }

    #[test]
    fn bad_keys_and_hardened_indexes_are_refused() {
        assert!(matches!(
            DepositKey::parse("xprv9s21ZrQH143K"),
            Err(HdError::InvalidXpub(_))
        ));
        assert!(matches!(
            DepositKey::parse("xpub-not-base58"),
            Err(HdError::InvalidXpub(_))
        ));
        let key = dev_deposit_key(DEV_MNEMONIC).unwrap();
        assert_eq!(key.address(1 << 31), Err(HdError::HardenedIndex(1 << 31)));
    }
}
