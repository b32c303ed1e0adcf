//! The webhook dispatcher: claims due deliveries, signs and sends them, and logs each attempt.
//!
//! Deliveries are independent: each has its own schedule, attempts run concurrently with a
//! timeout, so one slow or failing endpoint never holds up another. A failed attempt is retried
//! with exponential backoff (10 s, 20 s, 40 s, … capped at 6 h) until 3 days after the event;
//! then the delivery is marked failed (and can still be redelivered through the API).
//!
//! A GatePay notification is signed with the credential the store names for its order (the one
//! that created it), found by the order — never by anything in the notification's body — and
//! only while that credential is unrevoked and belongs to the order's merchant. Otherwise the
//! notification is not sent: the attempt fails with the reason in the delivery log and is
//! retried like any other failure.
//!
//! Every request goes through the outbound policy ([`crate::outbound`]): an IP-literal host is
//! judged before the request is built, a host name is resolved by the policy, which refuses it
//! if any of its addresses is refused and otherwise lets the client connect only to the
//! addresses it checked. A refused attempt is logged as "refused by the outbound policy", with
//! no status code and no duration, the same whatever listens (or not) at the target.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_store::{
    AttemptOutcome, AttemptRow, DeliveryRow, DeliveryStatus, DueDelivery, GatePayCredentialRow,
    Store, StoreError, WebhookFormat,
};
use futures_util::stream::{self, StreamExt};

use super::{Outcome, StepError, Worker};
use crate::Gateway;
use crate::events::{SIGNATURE_HEADER, sign};
use crate::gatepay;
use crate::outbound::{OutboundPolicy, Refused};

/// Retries stop this long after the event.
pub const RETRY_WINDOW_MS: i64 = 3 * 24 * 60 * 60 * 1000;
const FIRST_RETRY_MS: i64 = 10_000;
const MAX_RETRY_MS: i64 = 6 * 60 * 60 * 1000;
const LEASE_MS: i64 = 60_000;
const BATCH: u64 = 32;
const CONCURRENCY: usize = 16;

/// When to try again after `attempts` failed attempts.
pub fn next_attempt_at(now_ms: i64, attempts: u32) -> i64 {
    let exponent = attempts.saturating_sub(1).min(20);
    now_ms
        + FIRST_RETRY_MS
            .saturating_mul(1 << exponent)
            .min(MAX_RETRY_MS)
}

/// Sends webhooks.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    outbound: Arc<OutboundPolicy>,
    /// `None` when the client could not be built: every attempt then fails (and is retried)
    /// rather than going out through a client without the policy.
    client: Option<reqwest::Client>,
    clock: crate::clock::Clock,
}

impl Dispatcher {
    /// A dispatcher over the application's store, sending where its outbound policy allows.
    pub fn new(gateway: &Gateway) -> Self {
        let client = gateway
            .outbound
            .http_client()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("Coffer-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build();
        if let Err(error) = &client {
            tracing::error!(%error, "cannot build the webhook client; deliveries will fail");
        }
        Dispatcher {
            store: gateway.store.clone(),
            outbound: gateway.outbound.clone(),
            client: client.ok(),
            clock: gateway.clock.clone(),
        }
    }

    /// The outcome of an attempt that was refused by the outbound policy.
    fn refused(due: &DueDelivery, now_ms: i64) -> AttemptOutcome {
        Self::outcome(due, now_ms, None, Some(Refused.to_string()), 0)
    }

    /// The log entry and next state of an attempt.
    fn outcome(
        due: &DueDelivery,
        now_ms: i64,
        status_code: Option<u16>,
        error: Option<String>,
        duration_ms: i64,
    ) -> AttemptOutcome {
        let attempts = due.delivery.attempts + 1;
        let status = if error.is_none() {
            DeliveryStatus::Delivered
        } else if now_ms - due.event_created_at_ms >= RETRY_WINDOW_MS {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Pending
        };
        if let Some(error) = &error {
            tracing::info!(delivery = %due.delivery.delivery_id, attempts, %error, "webhook delivery failed");
        }
        AttemptOutcome {
            attempt: AttemptRow {
                delivery_id: due.delivery.delivery_id.clone(),
                attempted_at_ms: now_ms,
                status_code,
                error,
                duration_ms,
            },
            status,
            next_attempt_at_ms: next_attempt_at(now_ms, attempts),
        }
    }

    async fn attempt(&self, due: DueDelivery) -> AttemptOutcome {
        let started = Instant::now();
        let now_ms = self.clock.now_ms();
        let Ok(url) = self.outbound.admit(&due.delivery.url) else {
            return Self::refused(&due, now_ms);
        };
        let Some(client) = &self.client else {
            return Self::outcome(
                &due,
                now_ms,
                None,
                Some("the webhook client is unavailable".to_owned()),
                0,
            );
        };
        let body = due.payload.clone().into_bytes();
        let gatepay = due.format == WebhookFormat::GatePay;
        let mut request = client
            .post(url)
            .header("Content-Type", "application/json")
            .header("Coffer-Event", &due.event_type)
            .header("Coffer-Delivery", &due.delivery.delivery_id);
        let mut unsigned = None;
        if gatepay {
            // GatePay's format: signed with the credential's secret, X-GatePay-* headers. A
            // notification that cannot be signed is not sent (the attempt fails and is retried).
            match self.gatepay_signer(&due.delivery, &body).await {
                Ok(credential) => {
                    let headers = gatepay::notification_headers(
                        &credential.client_id,
                        &credential.secret,
                        &body,
                    );
                    for (name, value) in headers {
                        request = request.header(name, value);
                    }
                }
                Err(error) => {
                    unsigned = Some(format!("cannot sign the GatePay notification: {error}"))
                }
            }
        } else {
            request = request.header(
                SIGNATURE_HEADER,
                sign(&due.webhook_secret, now_ms / 1000, &body),
            );
        }
        let (status_code, error) = if let Some(error) = unsigned {
            (None, Some(error))
        } else {
            let result = request.body(body).send().await;
            let result = match result {
                // GatePay's merchants acknowledge with {"returnCode":"SUCCESS"}; anything else is
                // retried.
                Ok(response) if gatepay && response.status().is_success() => {
                    let status = response.status();
                    match response.bytes().await {
                        Ok(answer) if gatepay::acknowledged(&answer) => Ok((status, None)),
                        Ok(_) => Ok((
                            status,
                            Some("endpoint did not answer {\"returnCode\":\"SUCCESS\"}".to_owned()),
                        )),
                        Err(error) => Err(error),
                    }
                }
                Ok(response) => Ok((response.status(), None)),
                Err(error) => Err(error),
            };
            match result {
                Ok((status, Some(error))) => (Some(status.as_u16()), Some(error)),
                Ok((status, None)) if status.is_success() => (Some(status.as_u16()), None),
                Ok((status, None)) => (
                    Some(status.as_u16()),
                    Some(format!("endpoint answered {status}")),
                ),
                Err(error) if Refused::caused(&error) => return Self::refused(&due, now_ms),
                Err(error) => (None, Some(error.without_url().to_string())),
            }
        };
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        Self::outcome(&due, now_ms, status_code, error, duration_ms)
    }

    /// The credential that may sign a GatePay notification: the one the store names for the
    /// notification's order, if it belongs to the order's merchant and is not revoked.
    ///
    /// # Errors
    /// Why the notification must not be signed (the text goes to the delivery log).
    async fn gatepay_signer(
        &self,
        delivery: &DeliveryRow,
        body: &[u8],
    ) -> Result<GatePayCredentialRow, String> {
        let unreadable = |error: StoreError| {
            tracing::warn!(%error, delivery = %delivery.delivery_id, "reading a GatePay notification's signer failed");
            "the notification's order could not be read; retrying".to_owned()
        };
        let event = self
            .store
            .event(&delivery.event_id)
            .await
            .map_err(unreadable)?;
        let order_id = event
            .order_id
            .ok_or("the notification concerns no order: not signed")?;
        let order = self.store.order(&order_id).await.map_err(unreadable)?;
        let gatepay = self
            .store
            .gatepay_order_of(&order_id)
            .await
            .map_err(unreadable)?
            .ok_or_else(|| format!("order {order_id} is not a GatePay order: not signed"))?;
        let merchant = &order.merchant_id;
        if &gatepay.merchant_id != merchant
            || &event.merchant_id != merchant
            || &delivery.merchant_id != merchant
        {
            return Err(format!(
                "order {order_id} belongs to another merchant: not signed"
            ));
        }
        let credential = self
            .store
            .gatepay_credential(&gatepay.client_id)
            .await
            .map_err(unreadable)?
            .ok_or_else(|| {
                format!(
                    "GatePay credential {} no longer exists: not signed",
                    gatepay.client_id
                )
            })?;
        if &credential.merchant_id != merchant {
            // Not named: the log is the order merchant's to read, the credential is not theirs.
            return Err(
                "the order's GatePay credential belongs to another merchant: not signed".to_owned(),
            );
        }
        if credential.revoked_at_ms.is_some() {
            return Err(format!(
                "GatePay credential {} is revoked: not signed",
                credential.client_id
            ));
        }
        // The body names the client id it is signed for; it must be this one.
        let named = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|value| value.get("client_id")?.as_str().map(str::to_owned));
        if named.as_deref() != Some(credential.client_id.as_str()) {
            return Err(format!(
                "the notification names another client_id than its order's credential {}: not signed",
                credential.client_id
            ));
        }
        Ok(credential)
    }

    /// Sends every due delivery once; returns how many were attempted.
    ///
    /// # Errors
    /// [`StepError`] when the store fails.
    #[tracing::instrument(skip_all)]
    pub async fn dispatch_due(&self) -> Result<usize, StepError> {
        let now_ms = self.clock.now_ms();
        let due = self
            .store
            .claim_due_deliveries(now_ms, LEASE_MS, BATCH)
            .await?;
        let count = due.len();
        let outcomes: Vec<AttemptOutcome> = stream::iter(due)
            .map(|due| self.attempt(due))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        if count > 0 {
            coffer_core::crash_point!("dispatcher.after_send");
        }
        for outcome in outcomes {
            self.store.record_attempt(&outcome).await?;
        }
        Ok(count)
    }
}

impl Worker for Dispatcher {
    fn name(&self) -> String {
        "dispatcher".to_owned()
    }

    async fn run_once(&mut self) -> Result<Outcome, StepError> {
        let attempted = self.dispatch_due().await?;
        Ok(if attempted > 0 {
            Outcome::Worked
        } else {
            Outcome::Idle
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_six_hours() {
        assert_eq!(next_attempt_at(0, 1), 10_000);
        assert_eq!(next_attempt_at(0, 2), 20_000);
        assert_eq!(next_attempt_at(0, 3), 40_000);
        assert_eq!(next_attempt_at(0, 30), MAX_RETRY_MS);
    }
}
