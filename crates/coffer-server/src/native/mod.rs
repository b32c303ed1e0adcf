//! Coffer's own API around the vendor dialects: the calling merchant's profile and keys, its
//! payout wallets, its events, and their webhook deliveries.

pub mod merchant;
pub mod payout_wallets;
pub mod webhooks;
