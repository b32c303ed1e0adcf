//! Events and webhook deliveries: what happened to your orders, what Coffer sent, and
//! redelivery.
//!
//! Redelivery is limited: at most [`REDELIVERIES_PER_HOUR`] per event in any hour, and none
//! while a delivery of the event is due or being attempted; beyond that it answers 429
//! `REDELIVERY_LIMITED`. The count comes from the stored deliveries, so it holds across
//! replicas.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use coffer_store::{DeliveryRow, EventRow, Redelivery, RedeliveryLimit, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::CallingMerchant;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use coffer_gateway::events::{new_id, rfc3339_ms};

/// How many times one event may be redelivered in any hour.
pub const REDELIVERIES_PER_HOUR: u32 = 5;

const REDELIVERY_LIMIT: RedeliveryLimit = RedeliveryLimit {
    per_window: REDELIVERIES_PER_HOUR,
    window_ms: 60 * 60 * 1000,
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
}

/// An event as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Public id.
    pub id: String,
    /// Type, e.g. `payment_order.confirmed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The order concerned.
    pub order_id: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// The payload delivered to webhooks.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// When.
    pub attempted_at: String,
    /// HTTP status, if the endpoint answered.
    pub status_code: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Duration.
    pub duration_ms: i64,
}

/// A webhook delivery with its log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Public id.
    pub id: String,
    /// The event.
    pub event_id: String,
    /// Endpoint.
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub status: &'static str,
    /// Attempts made.
    pub attempts: u32,
    /// Next attempt (pending deliveries).
    pub next_attempt_at: Option<String>,
    /// Last HTTP status.
    pub last_status_code: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<String>,
    /// Every attempt, oldest first.
    pub log: Vec<AttemptView>,
}

/// `{"success": true, "data": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// Always `true`.
    pub success: bool,
    /// Newest first.
    pub data: Vec<EventView>,
}

/// `{"success": true, "data": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// Always `true`.
    pub success: bool,
    /// Newest first.
    pub data: Vec<DeliveryView>,
}

/// `{"success": true, "data": delivery}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryEnvelope {
    /// Always `true`.
    pub success: bool,
    /// The scheduled delivery.
    pub data: DeliveryView,
}

/// Event filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only this order's events.
    pub order_id: Option<String>,
    /// At most this many (default 100; 0 counts as 1, more than 500 as 500).
    #[param(minimum = 0)]
    pub limit: Option<u64>,
}

fn event_view(event: EventRow) -> EventView {
    EventView {
        payload: serde_json::from_str(&event.payload).unwrap_or(serde_json::Value::Null),
        id: event.event_id,
        event_type: event.event_type,
        order_id: event.order_id,
        created_at: rfc3339_ms(event.created_at_ms),
    }
}

async fn delivery_view(state: &AppState, delivery: DeliveryRow) -> Result<DeliveryView, ApiError> {
    let log = state
        .gateway
        .store
        .delivery_attempts(&delivery.delivery_id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .map(|attempt| AttemptView {
            attempted_at: rfc3339_ms(attempt.attempted_at_ms),
            status_code: attempt.status_code,
            error: attempt.error,
            duration_ms: attempt.duration_ms,
        })
        .collect();
    let pending = delivery.status == coffer_store::DeliveryStatus::Pending;
    Ok(DeliveryView {
        id: delivery.delivery_id,
        event_id: delivery.event_id,
        url: delivery.url,
        status: delivery.status.as_str(),
        attempts: delivery.attempts,
        next_attempt_at: pending.then(|| rfc3339_ms(delivery.next_attempt_at_ms)),
        last_status_code: delivery.last_status_code,
        last_error: delivery.last_error,
        delivered_at: delivery.delivered_at_ms.map(rfc3339_ms),
        log,
    })
}

async fn owned_event(
    state: &AppState,
    merchant: &coffer_store::MerchantRow,
    event_id: &str,
) -> Result<EventRow, ApiError> {
    match state.gateway.store.event(event_id).await {
        Ok(event) if event.merchant_id == merchant.id => Ok(event),
        Ok(_) | Err(StoreError::NotFound(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "EVENT_NOT_FOUND",
            format!("event {event_id} not found"),
        )),
        Err(error) => Err(ApiError::internal(&error)),
    }
}

/// Your events, newest first: every change to your orders, delivered or not.
#[utoipa::path(
    get,
    path = "/api/events/",
    tag = "webhooks",
    security(("api_key" = [])),
    params(EventParams),
    responses(
        (status = 200, body = EventList, links(
            ("deliveries" = (operation_id = "list_deliveries", parameters(("event_id" = "$response.body#/data/0/id")))),
            ("redeliver" = (operation_id = "redeliver", parameters(("event_id" = "$response.body#/data/0/id"))))
        )),
        (status = 400, description = "VALIDATION_ERROR naming the parameter", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody)
    )
)]
#[tracing::instrument(skip_all)]
async fn list_events(
    State(state): State<AppState>,
    CallingMerchant(merchant): CallingMerchant,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Json<EventList>, ApiError> {
    let limit = params.limit.unwrap_or(100).clamp(1, 500);
    let events = state
        .gateway
        .store
        .events(&merchant.id, params.order_id.as_deref(), limit)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(EventList {
        success: true,
        data: events.into_iter().map(event_view).collect(),
    }))
}

/// The webhook deliveries of one event, with every attempt.
#[utoipa::path(
    get,
    path = "/api/events/{event_id}/deliveries/",
    tag = "webhooks",
    security(("api_key" = [])),
    params(("event_id" = String, Path, description = "evt_…")),
    responses(
        (status = 200, body = DeliveryList),
        (status = 400, description = "VALIDATION_ERROR: the path is not UTF-8", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
        (status = 404, description = "EVENT_NOT_FOUND (also another merchant's event)", body = ErrorBody)
    )
)]
#[tracing::instrument(skip_all)]
async fn list_deliveries(
    State(state): State<AppState>,
    CallingMerchant(merchant): CallingMerchant,
    ApiPath(event_id): ApiPath<String>,
) -> Result<Json<DeliveryList>, ApiError> {
    owned_event(&state, &merchant, &event_id).await?;
    let deliveries = state
        .gateway
        .store
        .deliveries(&merchant.id, Some(&event_id), 100)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut data = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        data.push(delivery_view(&state, delivery).await?);
    }
    Ok(Json(DeliveryList {
        success: true,
        data,
    }))
}

/// Send an event again, now, to the order's webhook URL or your endpoint. At most 5 times per
/// event in any hour, and not while a delivery of it is due or being attempted.
#[utoipa::path(
    post,
    path = "/api/events/{event_id}/redeliver/",
    tag = "webhooks",
    security(("api_key" = [])),
    params(("event_id" = String, Path, description = "evt_…")),
    responses(
        (status = 202, description = "Scheduled", body = DeliveryEnvelope),
        (status = 400, description = "NO_WEBHOOK_URL; NOT_DELIVERABLE (an event recorded, never sent, such as payment_order.created); or VALIDATION_ERROR: the path is not UTF-8", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
        (status = 404, description = "EVENT_NOT_FOUND (also another merchant's event)", body = ErrorBody),
        (status = 429, description = "REDELIVERY_LIMITED: a delivery of the event is in flight, or it was redelivered 5 times in the last hour", body = ErrorBody)
    )
)]
#[tracing::instrument(skip_all)]
async fn redeliver(
    State(state): State<AppState>,
    CallingMerchant(merchant): CallingMerchant,
    ApiPath(event_id): ApiPath<String>,
) -> Result<(StatusCode, Json<DeliveryEnvelope>), ApiError> {
    let event = owned_event(&state, &merchant, &event_id).await?;
    // Only an event that was meant to be sent can be sent again: one recorded without a
    // delivery (`payment_order.created`, a GatePay order's native events) never is.
    let delivered_before = !state
        .gateway
        .store
        .deliveries(&merchant.id, Some(&event.event_id), 1)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .is_empty();
    if !delivered_before {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NOT_DELIVERABLE",
            format!("{event_id} is recorded, not sent: it has no delivery to repeat"),
        ));
    }
    let order_url = match &event.order_id {
        Some(order_id) => state
            .gateway
            .store
            .order(order_id)
            .await
            .ok()
            .and_then(|order| order.webhook_url),
        None => None,
    };
    let url = order_url.or(merchant.webhook_url.clone()).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "NO_WEBHOOK_URL",
            "neither the order nor the merchant has a webhook URL",
        )
    })?;
    let scheduled = state
        .gateway
        .store
        .schedule_redelivery(
            &event,
            &new_id("whd"),
            &url,
            coffer_gateway::clock::now_ms(),
            REDELIVERY_LIMIT,
        )
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let delivery = match scheduled {
        Redelivery::Scheduled(delivery) => delivery,
        Redelivery::InFlight => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "REDELIVERY_LIMITED",
                format!("a delivery of {event_id} is in flight; redeliver it once it is done"),
            ));
        }
        Redelivery::Limited { retry_at_ms } => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "REDELIVERY_LIMITED",
                format!(
                    "{event_id} was redelivered {REDELIVERIES_PER_HOUR} times in the last hour; \
                     it can be redelivered again at {}",
                    rfc3339_ms(retry_at_ms)
                ),
            ));
        }
    };
    let data = delivery_view(&state, delivery).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DeliveryEnvelope {
            success: true,
            data,
        }),
    ))
}
