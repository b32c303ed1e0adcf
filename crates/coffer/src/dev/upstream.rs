//! A small upstream API for `coffer dev`'s demo paywall route.
//!
//! `GET /premium/quote` (and anything under `/premium/`) answers a JSON quote; every request it
//! serves is counted, and `GET /hits` returns the count, so one can check that a paid request
//! reached the upstream exactly once and an unpaid one never did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use serde_json::{Value, json};

async fn premium(State(hits): State<Arc<AtomicU64>>, uri: Uri) -> Json<Value> {
    let hit = hits.fetch_add(1, Ordering::SeqCst) + 1;
    Json(json!({
        "path": uri.path(),
        "quote": "Fortune favours the prepared payer.",
        "served": hit,
    }))
}

async fn count(State(hits): State<Arc<AtomicU64>>) -> Json<Value> {
    Json(json!({"hits": hits.load(Ordering::SeqCst)}))
}

/// The running upstream's URLs.
#[derive(Debug, Clone)]
pub struct DemoUpstream {
    /// Base URL (`http://127.0.0.1:port`).
    pub base_url: String,
    /// The hit counter (`GET`).
    pub hits_url: String,
}

/// Starts the upstream on a free loopback port.
///
/// # Errors
/// The I/O error when no port can be bound.
pub async fn start() -> std::io::Result<DemoUpstream> {
    let hits = Arc::new(AtomicU64::new(0));
    let router = Router::new()
        .route("/premium/{*rest}", get(premium))
        .route("/hits", get(count))
        .with_state(hits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(DemoUpstream {
        hits_url: format!("{base_url}/hits"),
        base_url,
    })
}
