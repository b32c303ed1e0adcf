//! The API's description of itself: OpenAPI and Prometheus metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi))
        .routes(routes!(metrics))
}

/// This document: every route Coffer serves.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
#[tracing::instrument(skip_all)]
async fn openapi(
    Extension(document): Extension<Arc<crate::ops::openapi::ServedDocument>>,
) -> Json<serde_json::Value> {
    Json(document.0.clone())
}

/// Prometheus metrics in text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, description = "OpenMetrics text format (Prometheus reads it)", content_type = "application/openmetrics-text")))]
#[tracing::instrument(skip_all)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render();
    let more = settlement_gas(&state).await + &rpc_calls(&state);
    // These families go before the registry's closing `# EOF`.
    let end = text.rfind("# EOF").unwrap_or(text.len());
    text.insert_str(end, &more);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// Gas Coffer's signers spent on x402 settlements since start, per merchant owning the payee
/// (`none` for payees no merchant registered), in OpenMetrics text.
async fn settlement_gas(state: &AppState) -> String {
    use std::collections::BTreeMap;

    use coffer_x402::settlement::GasSpent;
    let mut by_merchant: BTreeMap<String, GasSpent> = BTreeMap::new();
    for (chain_id, payee, spent) in state.gateway.settler.gas_spent() {
        let merchant = match state
            .gateway
            .store
            .pay_to_owner(chain_id, &format!("{payee:#x}"))
            .await
        {
            Ok(Some(owner)) => owner.merchant_id.as_str().to_owned(),
            _ => "none".to_owned(),
        };
        let total = by_merchant.entry(merchant).or_default();
        total.gas = total.gas.saturating_add(spent.gas);
        total.wei = total.wei.saturating_add(spent.wei);
        total.settlements += spent.settlements;
    }
    let families: [Family<GasSpent>; 3] = [
        (
            "coffer_x402_settlement_gas",
            "Gas units spent settling x402 payments, per merchant owning the payee",
            |spent| spent.gas.to_string(),
        ),
        (
            "coffer_x402_settlement_fee_wei",
            "Fees paid settling x402 payments (gas times price, in wei), per merchant owning the payee",
            |spent| spent.wei.to_string(),
        ),
        (
            "coffer_x402_settlements_resolved",
            "x402 settlements resolved (succeeded or failed), per merchant owning the payee",
            |spent| spent.settlements.to_string(),
        ),
    ];
    let series: Vec<(String, GasSpent)> = by_merchant
        .into_iter()
        .map(|(merchant, spent)| (format!("merchant=\"{merchant}\""), spent))
        .collect();
    counters(&families, &series)
}

/// A counter family: its name (without `_total`), its help text, and how a series' value is
/// read.
type Family<T> = (&'static str, &'static str, fn(&T) -> String);

/// Counter families in OpenMetrics text, one line per series (`labels` as written inside the
/// braces).
fn counters<T>(families: &[Family<T>], series: &[(String, T)]) -> String {
    use std::fmt::Write;

    let mut text = String::new();
    for (name, help, value) in families {
        let _ = writeln!(text, "# HELP {name} {help}.");
        let _ = writeln!(text, "# TYPE {name} counter");
        for (labels, item) in series {
            let _ = writeln!(text, "{name}_total{{{labels}}} {}", value(item));
        }
    }
    text
}

/// Each RPC endpoint's calls since start, labelled by chain and endpoint (`https://host/…`,
/// never its key: labels are bounded by the configuration), in OpenMetrics text.
fn rpc_calls(state: &AppState) -> String {
    use coffer_evm::rpc::EndpointCalls;
    let families: [Family<EndpointCalls>; 4] = [
        (
            "coffer_rpc_calls",
            "RPC calls made per endpoint, each counted once however often it was sent",
            |calls| calls.calls.to_string(),
        ),
        (
            "coffer_rpc_errors",
            "RPC calls that ended in a transport error after their retries, per endpoint",
            |calls| calls.errors.to_string(),
        ),
        (
            "coffer_rpc_retries",
            "RPC calls sent again after failing in passing (timeouts, 408, 429, 5xx), per endpoint",
            |calls| calls.retries.to_string(),
        ),
        (
            "coffer_rpc_call_seconds",
            "Time spent in RPC calls per endpoint, retries and pauses included",
            |calls| format!("{:.6}", calls.micros as f64 / 1e6),
        ),
    ];
    let series: Vec<(String, EndpointCalls)> = state
        .gateway
        .rpcs
        .iter()
        .flat_map(|rpc| rpc.calls())
        .map(|calls| {
            let labels = format!("chain=\"{}\",endpoint=\"{}\"", calls.chain, calls.endpoint);
            (labels, calls)
        })
        .collect();
    counters(&families, &series)
}
