//! A webhook inbox for `coffer dev`: the demo merchant's webhook endpoint.
//!
//! It checks each delivery's `Coffer-Signature` with the merchant's secret, prints one line per
//! webhook, and lists what it received at `GET /webhooks` (newest first) — the parsed body, and
//! the raw body with the signing headers exactly as they arrived, so a verifier such as
//! `examples/verify_webhook.py` can be tried on real deliveries (the newest one's body and
//! signature also as plain text at `GET /webhooks/latest/body` and `…/signature`) — so the
//! whole loop — order,
//! payment, confirmation, signed webhook — can be watched locally. GatePay-format
//! notifications (`X-GatePay-Signature`) are checked with the demo GatePay secret and
//! acknowledged with `{"returnCode":"SUCCESS"}`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use coffer_gateway::events::{SIGNATURE_HEADER, verify_signature};
use serde::Serialize;

/// How many webhooks the inbox keeps.
const KEEP: usize = 200;

/// One received webhook.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// Event type.
    pub event_type: String,
    /// Whether the signature verified with the merchant's secret.
    pub signature_valid: bool,
    /// The body as JSON.
    pub body: serde_json::Value,
    /// The body exactly as it arrived (what a signature is checked over).
    pub raw_body: String,
    /// The signing and identifying headers as they arrived (`coffer-signature`,
    /// `coffer-event`, `coffer-delivery`, `x-gatepay-*`), by lower-case name.
    pub headers: BTreeMap<String, String>,
}

/// The headers the inbox keeps with each delivery.
fn kept_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            name.starts_with("coffer-") || name.starts_with("x-gatepay-")
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

#[derive(Clone)]
struct Inbox {
    secret: Arc<String>,
    gatepay_secret: Arc<Option<String>>,
    received: Arc<Mutex<VecDeque<Received>>>,
}

impl Inbox {
    /// Keeps a received webhook, newest first, forgetting the oldest beyond [`KEEP`].
    fn record(&self, event_type: String, signature_valid: bool, headers: &HeaderMap, raw: &[u8]) {
        let body = serde_json::from_slice(raw).unwrap_or_default();
        if let Ok(mut received) = self.received.lock() {
            received.push_front(Received {
                event_type,
                signature_valid,
                body,
                raw_body: String::from_utf8_lossy(raw).into_owned(),
                headers: kept_headers(headers),
            });
            received.truncate(KEEP);
        }
    }
}

/// A header's value as text; empty when it is missing or not text.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

async fn receive(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> Response {
    if headers.contains_key("x-gatepay-signature") {
        return receive_gatepay(&inbox, &headers, &body);
    }
    let valid = verify_signature(
        &inbox.secret,
        header(&headers, SIGNATURE_HEADER),
        &body,
        chrono::Utc::now().timestamp(),
        300,
    );
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let event_type = json["type"].as_str().unwrap_or("?").to_owned();
    let order = &json["data"];
    eprintln!(
        "coffer dev: webhook {event_type} {} status={} paid={} signature {}",
        order["order_id"].as_str().unwrap_or("-"),
        order["status"].as_str().unwrap_or("-"),
        order["amount_paid"].as_str().unwrap_or("-"),
        if valid { "ok" } else { "INVALID" }
    );
    inbox.record(event_type, valid, &headers, &body);
    if valid {
        StatusCode::OK.into_response()
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

fn receive_gatepay(inbox: &Inbox, headers: &HeaderMap, body: &[u8]) -> Response {
    let valid = inbox.gatepay_secret.as_deref().is_some_and(|secret| {
        coffer_gateway::gatepay::verify(
            secret,
            header(headers, "x-gatepay-timestamp"),
            header(headers, "x-gatepay-nonce"),
            body,
            header(headers, "x-gatepay-signature"),
        )
    });
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let event_type = format!("gatepay {}", json["bizStatus"].as_str().unwrap_or("?"));
    eprintln!(
        "coffer dev: GatePay notification {} prepayId={} signature {}",
        json["bizStatus"].as_str().unwrap_or("-"),
        json["bizId"].as_str().unwrap_or("-"),
        if valid { "ok" } else { "INVALID" }
    );
    inbox.record(event_type, valid, headers, body);
    if valid {
        Json(serde_json::json!({"returnCode": "SUCCESS", "returnMessage": ""})).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"returnCode": "FAIL", "returnMessage": "bad signature"})),
        )
            .into_response()
    }
}

/// Which delivery `/webhooks/latest/…` shows.
#[derive(serde::Deserialize)]
struct Latest {
    /// Only a delivery of this event type (`payment_order.confirmed`); waits up to 10 s for one.
    event: Option<String>,
}

/// The newest delivery's raw body (`/webhooks/latest/body`) or `Coffer-Signature`
/// (`/webhooks/latest/signature`), as plain text, to feed a verifier from the shell;
/// `?event=<type>` picks the newest of that type, waiting up to 10 s for one to arrive.
async fn latest(
    State(inbox): State<Inbox>,
    axum::extract::Path(part): axum::extract::Path<String>,
    axum::extract::Query(query): axum::extract::Query<Latest>,
) -> Response {
    let newest = || {
        inbox.received.lock().ok().and_then(|received| {
            received
                .iter()
                .find(|hook| {
                    query
                        .event
                        .as_ref()
                        .is_none_or(|event| hook.event_type == *event)
                })
                .cloned()
        })
    };
    let mut found = newest();
    for _ in 0..100 {
        if found.is_some() || query.event.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        found = newest();
    }
    let Some(newest) = found else {
        return (StatusCode::NOT_FOUND, "no such webhook received yet\n").into_response();
    };
    match part.as_str() {
        "body" => newest.raw_body.into_response(),
        "signature" => newest
            .headers
            .get("coffer-signature")
            .cloned()
            .unwrap_or_default()
            .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            "use /webhooks/latest/body or /webhooks/latest/signature\n",
        )
            .into_response(),
    }
}

async fn list(State(inbox): State<Inbox>) -> Json<Vec<Received>> {
    Json(
        inbox
            .received
            .lock()
            .map(|received| received.iter().cloned().collect())
            .unwrap_or_default(),
    )
}

/// Starts the inbox on a free loopback port; returns its URL (`http://127.0.0.1:port/webhooks`).
///
/// # Errors
/// The I/O error when no port can be bound.
pub async fn start(secret: String, gatepay_secret: Option<String>) -> std::io::Result<String> {
    let inbox = Inbox {
        secret: Arc::new(secret),
        gatepay_secret: Arc::new(gatepay_secret),
        received: Arc::default(),
    };
    let router = Router::new()
        .route("/webhooks", post(receive).get(list))
        .route("/webhooks/latest/{part}", axum::routing::get(latest))
        .with_state(inbox);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}
