//! Events and their webhook signatures.
//!
//! Every change to an order is written as an event in the same transaction as the change
//! (outbox). An event's JSON is what the merchant receives:
//!
//! ```json
//! {"id": "evt_…", "type": "payment_order.confirmed", "created_at": "2026-…Z", "data": { …order… }}
//! ```
//!
//! Deliveries are signed `Coffer-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<raw body>")>`; [`verify_signature`] is the reference check.

use chrono::{TimeZone, Utc};
use coffer_store::{MerchantRow, NewDelivery, NewEvent, WebhookFormat};
use hmac::{Hmac, Mac};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Coffer-Signature";

/// A random public id with a prefix, e.g. `evt_3k9x…`.
pub fn new_id(prefix: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}_{}", suffix.to_ascii_lowercase())
}

/// RFC 3339 UTC with seconds, from unix milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Builds an event about an order, with a delivery to `webhook_url` (the order's own) or else
/// the merchant's endpoint. `deliver = false` records the event without sending it.
pub fn order_event(
    merchant: &MerchantRow,
    order_id: &str,
    order_webhook_url: Option<&str>,
    event_type: &str,
    data: serde_json::Value,
    now_ms: i64,
    deliver: bool,
) -> NewEvent {
    let event_id = new_id("evt");
    let payload = serde_json::json!({
        "id": event_id,
        "type": event_type,
        "created_at": rfc3339_ms(now_ms),
        "data": data,
    });
    let url = order_webhook_url.or(merchant.webhook_url.as_deref());
    NewEvent {
        event_id,
        merchant_id: merchant.id.clone(),
        order_id: Some(order_id.to_owned()),
        event_type: event_type.to_owned(),
        payload: payload.to_string(),
        format: WebhookFormat::Coffer,
        created_at_ms: now_ms,
        delivery: url.filter(|_| deliver).map(|url| NewDelivery {
            delivery_id: new_id("whd"),
            url: url.to_owned(),
        }),
    }
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Coffer-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Checks a `Coffer-Signature` header: a `v1` signature must match (in constant time) and `t`
/// must be within `tolerance_seconds` of `now`.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_seconds: i64,
) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if (now - timestamp).abs() > tolerance_seconds {
        return false;
    }
    signatures
        .iter()
        .any(|signature| mac(secret, timestamp, body).verify_slice(signature).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject_tampering_and_staleness() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign("whsec_test", 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify_signature(
            "whsec_test",
            &header,
            body,
            1_700_000_100,
            300
        ));
        assert!(!verify_signature(
            "whsec_other",
            &header,
            body,
            1_700_000_100,
            300
        ));
        assert!(!verify_signature(
            "whsec_test",
            &header,
            br#"{"id":"evt_2"}"#,
            1_700_000_100,
            300
        ));
        assert!(!verify_signature(
            "whsec_test",
            &header,
            body,
            1_700_001_000,
            300
        ));
        assert!(!verify_signature(
            "whsec_test",
            "v1=00",
            body,
            1_700_000_000,
            300
        ));
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: python3 -c "import hmac,hashlib;
        // print(hmac.new(b'secret', b'1.{}', hashlib.sha256).hexdigest())"
        assert_eq!(
            sign("secret", 1, b"{}"),
            "t=1,v1=1122767b193110cfec322b6f199b599edbf608ed087f2d27afb0b97d99523908"
        );
    }
}
