//! `coffer config example | check`.

use clap::Subcommand;

use crate::config::{Config, EXAMPLE};
use crate::failure::Failure;

/// `coffer config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print a commented configuration template.
    Example,
    /// Validate the configuration (file and environment) and print the result.
    Check,
}

/// Prints the commented template; it needs no configuration, so it runs before any is loaded.
pub fn example() {
    print!("{EXAMPLE}");
}

/// Runs `coffer config …` with the loaded configuration.
///
/// # Errors
/// [`Failure`] when the configuration cannot be shown.
pub fn command(config: &Config, action: ConfigAction) -> Result<(), Failure> {
    match action {
        ConfigAction::Example => example(),
        ConfigAction::Check => {
            let shown = config.redacted();
            let text = toml::to_string_pretty(&shown).map_err(|e| Failure::new(e.to_string()))?;
            println!("# configuration is valid\n{text}");
        }
    }
    Ok(())
}
