//! Coffer's HTTP server: only HTTP, organised by API family, over the payment core in
//! `coffer-gateway`.
//!
//! Handlers are thin: they extract, call the [`coffer_gateway::Gateway`], and render the result
//! in their API family's dialect. Each family holds its wire types and handlers, and answers
//! every refusal in its own envelope:
//!
//! - [`cryptopay`]: payment orders (`/api/payment-orders/`), CryptoPay's dialect and Coffer's;
//! - [`gatepay`]: GatePay checkout (`/v1/pay/…`), signed with `X-GatePay-*` headers;
//!   [`gatepay::checkout`] maps its bodies onto the core and back;
//! - [`pelago`]: the Pelago x402 order family (create → 402 → confirm);
//! - [`okx`]: OKX's x402 facilitator (`/api/v6/pay/x402/…`), signed with `OK-ACCESS-*`;
//! - [`x402`]: the x402 facilitator in the protocol's own words (`/x402/verify|settle|supported`);
//! - [`native`]: the merchant's profile, keys, events and webhook deliveries;
//! - [`pages`]: the customer's checkout page and QR code, and the security headers of every
//!   HTML answer ([`pages::safety`]);
//! - [`paywall`]: the x402 paywall, a reverse proxy that answers 402 until paid, matching
//!   request paths in one canonical form ([`paywall::request_path`]);
//! - [`ops`]: health, readiness, metrics and the OpenAPI document.
//!
//! Shared by every family: [`app`] ([`app::AppState`], [`app::router`] and [`app::serve`], with
//! the request and connection limits), [`auth`] (the API-key extractor), [`error`] (the native
//! error envelope), [`json`] (bodies whose errors name the field) and [`extract`] (path and query
//! parameters refused in each family's envelope).

pub mod app;
pub mod auth;
pub mod cryptopay;
pub mod error;
pub mod extract;
pub mod gatepay;
pub mod json;
pub mod native;
pub mod okx;
pub mod ops;
pub mod pages;
pub mod paywall;
pub mod pelago;
#[cfg(feature = "testing")]
pub mod testing;
pub mod x402;

pub use app::{AppState, router, serve};
