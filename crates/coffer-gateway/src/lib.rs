//! Coffer's payment core: everything a merchant's money goes through, with no HTTP.
//!
//! The HTTP API (`coffer-server`), the workers and the CLI all drive one [`Gateway`]. The
//! layering is `coffer → coffer-server → coffer-gateway → coffer-x402 → coffer-evm,
//! coffer-store → coffer-core`: this crate depends on no web framework (the test command checks
//! that none of axum, http, tower or utoipa is a direct dependency, with the optional `openapi`
//! feature off), and nothing here knows how a request arrived.
//!
//! - [`gateway`]: [`Gateway`], the services built once over a store and a chain registry;
//! - [`orders`]: payment orders: creation (validate → reserve an address → write), views, and
//!   [`orders::reevaluate`], the one place payments become status changes and events;
//! - [`sales`]: x402 settlements to a merchant's payTo recorded as orders with a payment;
//! - [`pelago`]: the x402 order flows (create → 402 → confirm) behind the Pelago dialect;
//! - [`merchants`]: merchants and API keys; [`okx`] and [`gatepay`]: the vendor credentials,
//!   their request signatures, and GatePay's notifications;
//! - [`fiat`]: fiat-priced orders (the rate table and exact, documented rounding);
//! - [`events`]: events (the outbox) and webhook signatures;
//! - [`outbound`]: where Coffer may send the webhooks and callbacks merchants ask for;
//! - [`facilitator_policy`] and [`rate_limit`]: who may use the x402 facilitator, and how much;
//! - [`clock`]: the one clock (unix milliseconds);
//! - [`links`]: page links merchants give and payment links customers open;
//! - [`workers`]: the chain watcher, the expirer, the webhook dispatcher and the settlement
//!   reconciler, each a `run_once` step wrapped in a loop.

pub use coffer_core::clock;
pub mod events;
pub mod facilitator_policy;
pub mod fiat;
pub mod gatepay;
pub mod gateway;
#[cfg(any(test, feature = "testing"))]
pub mod hostile_input;
pub mod links;
pub mod merchants;
pub mod okx;
pub mod orders;
pub mod outbound;
pub mod payout_wallets;
pub mod pelago;
pub mod rate_limit;
pub mod sales;
pub mod workers;

pub use gateway::Gateway;

mod test_support;
