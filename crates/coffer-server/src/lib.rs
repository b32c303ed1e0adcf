//! Coffer's HTTP server.
//!
//! Handlers are thin: they extract, call a service, and render the result in their API
//! family's dialect. This crate holds:
//!
//! - [`app`]: [`app::AppState`] and [`app::router`], which assemble every route, plus
//!   [`app::serve`], which runs a router until shutdown and lets requests in flight finish;
//! - [`merchants`]: the merchant and API-key service (create, list, revoke, authenticate),
//!   shared with the CLI;
//! - [`auth`]: the extractor that turns `Authorization: Bearer <key>` or
//!   `Merchant-App-Key: <key>` into the calling merchant;
//! - [`error`]: [`error::ApiError`], stable error codes in Coffer's native JSON envelope;
//! - [`metrics`]: Prometheus counters and histograms for every request;
//! - [`orders`]: the payment-order service and its wire form, and [`orders::reevaluate`], the
//!   one place payments become status changes and events;
//! - [`okx`]: OKX-style credentials and `OK-ACCESS-*` request authentication;
//! - [`gatepay`]: GatePay-style credentials, `X-GatePay-*` request authentication and
//!   notifications; [`gatepay_orders`]: the GatePay checkout flows over payment orders;
//! - [`fiat`]: fiat-priced orders (the rate table and exact, documented rounding);
//! - [`sales`]: x402 settlements to a merchant's payTo recorded as orders with a payment;
//! - [`pelago`]: the Pelago-compatible x402 order family (create → 402 → confirm);
//! - [`facilitator_policy`]: who may use the x402 facilitator routes, a minimum value, and
//!   per-payer and per-client rate limits ([`rate_limit`]);
//! - [`paywall`]: the x402 paywall, a reverse proxy that answers 402 until paid;
//! - [`request_path`]: request paths in one canonical form, matched and forwarded as is;
//! - [`page_safety`]: http(s)-only page links and the security headers of every HTML answer;
//! - [`events`]: events (the outbox) and webhook signatures;
//! - [`outbound`]: the outbound-request policy, which decides where Coffer may send the
//!   webhooks and callbacks merchants ask for (checked when a URL is set and when it is called);
//! - [`json`]: request bodies whose errors name the field; [`extract`]: path parameters,
//!   query strings and raw bodies refused in each family's envelope;
//! - [`workers`]: the chain watcher, the expirer and the webhook dispatcher, each a
//!   `run_once` step wrapped in a loop;
//! - [`routes`]: the handlers, each documented for the generated `/openapi.json`, which
//!   [`openapi`] completes with the wire formats and this deployment's choices.

pub mod app;
pub mod auth;
pub mod error;
pub mod events;
pub mod extract;
pub mod facilitator_policy;
pub mod fiat;
pub mod gatepay;
pub mod gatepay_orders;
#[cfg(test)]
mod hostile_input;
pub mod json;
pub mod merchants;
pub mod metrics;
pub mod okx;
pub mod openapi;
pub mod orders;
pub mod outbound;
pub mod page_safety;
pub mod paywall;
pub mod pelago;
pub mod rate_limit;
pub mod request_path;
pub mod routes;
pub mod sales;
pub mod workers;

pub use app::{AppState, router, serve};
