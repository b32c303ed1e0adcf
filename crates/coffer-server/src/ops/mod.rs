//! Operating Coffer: liveness and readiness, Prometheus metrics, and the OpenAPI document.

pub mod health;
pub mod meta;
pub mod metrics;
pub mod openapi;
