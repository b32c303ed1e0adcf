//! Identifiers, built only by fallible constructors so an invalid id never travels.

use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} id must look like \"{prefix}_\" followed by 1 to 64 letters or digits")]
pub struct IdError {
    kind: &'static str,
    prefix: &'static str,
}

/// A merchant's public identifier, e.g. `mer_3k9x2v7q1m0p`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct MerchantId(String);

impl MerchantId {
    const PREFIX: &'static str = "mer";

    /// Parses an id such as `mer_3k9x2v7q1m0p`.
    ///
    /// # Errors
    /// [`IdError`] when the prefix is wrong or the rest is empty, too long or not alphanumeric.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let valid = text.strip_prefix("mer_").is_some_and(|rest| {
            !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        if valid {
            Ok(MerchantId(text.to_owned()))
        } else {
            Err(IdError {
                kind: "merchant",
                prefix: Self::PREFIX,
            })
        }
    }

    /// Builds an id from a random alphanumeric suffix chosen by the caller.
    ///
    /// # Errors
    /// As [`MerchantId::parse`].
    pub fn from_suffix(suffix: &str) -> Result<Self, IdError> {
        Self::parse(&format!("{}_{suffix}", Self::PREFIX))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MerchantId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_ids_need_the_prefix_and_an_alphanumeric_suffix() {
        assert!(MerchantId::parse("mer_abc123").is_ok());
        for bad in [
            "abc123",
            "mer_",
            "mer_a-b",
            "key_abc",
            &format!("mer_{}", "a".repeat(65)),
        ] {
            assert!(MerchantId::parse(bad).is_err(), "{bad}");
        }
    }
}
