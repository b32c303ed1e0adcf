//! The customer's side of a payment order: a payment page and its QR code.
//!
//! `payment_url` and `qr_code_url` in order responses point here. The page shows what to pay,
//! where, and the order's live status (it refreshes itself until the order is settled, then
//! follows `redirect_url`). The QR code encodes an EIP-681 payment link for wallets.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use coffer_store::{OrderRow, StoreError};
use qrcode::QrCode;
use qrcode::render::svg;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(payment_page))
        .routes(routes!(payment_qr))
}

async fn load(state: &AppState, order_id: &str) -> Result<OrderRow, ApiError> {
    match state.store.order(order_id).await {
        Ok(order) => Ok(order),
        Err(StoreError::NotFound(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ORDER_NOT_FOUND",
            format!("payment order {order_id} not found"),
        )),
        Err(error) => Err(ApiError::internal(&error)),
    }
}

/// The EIP-681 link a wallet understands: a token transfer, or a plain value transfer.
pub fn payment_link(order: &OrderRow) -> String {
    let units = order.amount.base_units();
    match &order.asset_address {
        Some(token) => format!(
            "ethereum:{token}@{}/transfer?address={}&uint256={units}",
            order.chain_id, order.receiving_address
        ),
        None => format!(
            "ethereum:{}@{}?value={units}",
            order.receiving_address, order.chain_id
        ),
    }
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The payment page for an order.
#[utoipa::path(
    get,
    path = "/pay/{order_id}",
    tag = "payment page",
    params(("order_id" = String, Path, description = "ORD-…")),
    responses((status = 200, description = "HTML page", content_type = "text/html"), (status = 404, description = "ORDER_NOT_FOUND"))
)]
async fn payment_page(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    let order = load(&state, &order_id).await?;
    let amount = order.amount.to_decimal_string_min(order.decimals, 2);
    let paid = order.amount_paid.to_decimal_string_min(order.decimals, 2);
    let chain = state.chains.by_chain_id(order.chain_id).map_or_else(
        || order.blockchain.clone(),
        |chain| chain.display_name.clone(),
    );
    let settled = matches!(order.status.as_str(), "confirmed" | "expired" | "failed");
    let refresh = if settled {
        String::new()
    } else {
        "<meta http-equiv=\"refresh\" content=\"5\">".to_owned()
    };
    let redirect = match (&order.redirect_url, order.status.as_str()) {
        (Some(url), "confirmed") => format!(
            "<meta http-equiv=\"refresh\" content=\"3;url={}\">",
            escape(url)
        ),
        _ => String::new(),
    };
    let sub_status = order
        .sub_status
        .as_str()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}{redirect}\
<title>Pay {amount} {currency}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;color:#222}}\
.amount{{font-size:2rem;font-weight:600}}code{{word-break:break-all;background:#f4f4f4;padding:.2rem .4rem;border-radius:4px}}\
.status{{display:inline-block;padding:.2rem .6rem;border-radius:1rem;background:#eee}}img{{width:14rem;height:14rem}}</style>\
</head><body><h1>Payment</h1>\
<p class=\"amount\" id=\"amount\">{amount} {currency}</p>\
<p>on <strong>{chain}</strong></p>\
<p>Send to<br><code id=\"address\">{address}</code></p>\
<p><img src=\"/qr/{order_id}\" alt=\"QR code of the payment\"></p>\
<p>Status: <span class=\"status\" id=\"status\">{status}{sub_status}</span></p>\
<p>Received: <span id=\"paid\">{paid}</span> {currency}</p>\
<p><small>Order {order_id} · expires {expires}</small></p></body></html>",
        currency = escape(&order.currency),
        chain = escape(&chain),
        address = escape(&order.receiving_address),
        order_id = escape(&order.order_id),
        status = order.status.as_str(),
        expires = crate::events::rfc3339_ms(order.expires_at_ms),
    );
    Ok(Html(html).into_response())
}

/// A QR code (SVG) of the order's EIP-681 payment link.
#[utoipa::path(
    get,
    path = "/qr/{order_id}",
    tag = "payment page",
    params(("order_id" = String, Path, description = "ORD-…")),
    responses((status = 200, description = "SVG image", content_type = "image/svg+xml"), (status = 404, description = "ORDER_NOT_FOUND"))
)]
async fn payment_qr(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    let order = load(&state, &order_id).await?;
    let code =
        QrCode::new(payment_link(&order).as_bytes()).map_err(|error| ApiError::internal(&error))?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build();
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        image,
    )
        .into_response())
}
