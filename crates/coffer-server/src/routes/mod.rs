//! HTTP handlers, grouped by what they serve. Each module exposes `routes()`, an
//! [`utoipa_axum::router::OpenApiRouter`] so that every route appears in `/openapi.json`.

pub mod gatepay;
pub mod health;
pub mod merchant;
pub mod meta;
pub mod okx;
pub mod pay_page;
pub mod payment_orders;
pub mod pelago;
pub mod webhooks;
pub mod x402;
