//! A failed command: the one line to print and the exit code, and how the errors of the
//! layers below become one.
//!
//! The commands (`cli`) and the local environment (`dev`) both answer with a [`Failure`]; it
//! lives here so that neither has to import the other.

use std::fmt::Display;

use coffer_gateway::merchants::MerchantError;

use crate::config::ConfigError;
use crate::serve::StartError;

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// One line for stderr.
    pub message: String,
    /// 2 for configuration errors, 1 otherwise.
    pub exit_code: u8,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            exit_code: 1,
        }
    }

    /// Turns an error into a failure that says what was being done: `{context}: {error}`.
    pub(crate) fn context<E: Display>(context: impl Display) -> impl Fn(E) -> Failure {
        move |error| Failure::new(format!("{context}: {error}"))
    }
}

impl From<ConfigError> for Failure {
    fn from(error: ConfigError) -> Self {
        Failure {
            message: format!("invalid configuration: {error}"),
            exit_code: 2,
        }
    }
}

impl From<StartError> for Failure {
    fn from(error: StartError) -> Self {
        match error {
            StartError::Config(error) => error.into(),
            other => Failure::new(other.to_string()),
        }
    }
}

impl From<MerchantError> for Failure {
    fn from(error: MerchantError) -> Self {
        Failure::new(error.to_string())
    }
}

impl From<coffer_store::StoreError> for Failure {
    fn from(error: coffer_store::StoreError) -> Self {
        Failure::new(error.to_string())
    }
}
