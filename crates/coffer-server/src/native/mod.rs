//! Coffer's own API around the vendor dialects: the calling merchant's profile and keys, its
//! events, and their webhook deliveries.

pub mod merchant;
pub mod webhooks;
