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
    let more = settlement_gas(&state).await + &rpc_calls(&state) + &operations(&state).await;
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

/// What an operator watches, as gauges read from the database and the watchers when scraped:
/// each chain's head and the watcher's last processed block (and the lag between them), webhook
/// deliveries and x402 settlements by status, and how long the oldest undelivered webhook has
/// waited. A database that cannot be read leaves them out (the HTTP metrics still answer).
async fn operations(state: &AppState) -> String {
    let census = match state.gateway.store.operations_census().await {
        Ok(census) => census,
        Err(error) => {
            tracing::warn!(%error, "metrics: the operations census could not be read");
            return String::new();
        }
    };
    let mut heads = Vec::new();
    let mut processed = Vec::new();
    let mut lag = Vec::new();
    for rpc in state.gateway.rpcs.iter() {
        let labels = format!("chain=\"{}\"", rpc.chain());
        let cursor = census
            .cursors
            .iter()
            .find(|(chain_id, _, _)| *chain_id == rpc.chain_id())
            .map(|(_, block, _)| *block);
        if let Some(head) = rpc.last_head() {
            heads.push((labels.clone(), head.to_string()));
            if let Some(block) = cursor {
                lag.push((labels.clone(), head.saturating_sub(block).to_string()));
            }
        }
        if let Some(block) = cursor {
            processed.push((labels, block.to_string()));
        }
    }
    let by_status = |counts: &[(String, u64)]| -> Vec<(String, String)> {
        counts
            .iter()
            .map(|(status, n)| (format!("status=\"{status}\""), n.to_string()))
            .collect()
    };
    let oldest = census.oldest_pending_delivery_ms.map_or(0, |created| {
        (coffer_gateway::clock::now_ms() - created).max(0) / 1000
    });
    let mut text = String::new();
    gauges(
        &mut text,
        "coffer_chain_head_block",
        "The newest block the watcher saw on each chain",
        &heads,
    );
    gauges(
        &mut text,
        "coffer_watcher_block",
        "The last block the watcher processed on each chain",
        &processed,
    );
    gauges(
        &mut text,
        "coffer_watcher_lag_blocks",
        "Blocks between each chain's head and the last one the watcher processed",
        &lag,
    );
    gauges(
        &mut text,
        "coffer_webhook_deliveries",
        "Webhook deliveries by status (pending: not acknowledged yet, retried on schedule; failed: given up after 3 days)",
        &by_status(&census.deliveries),
    );
    gauges(
        &mut text,
        "coffer_webhook_oldest_pending_seconds",
        "How long the oldest webhook not yet delivered has waited (0: none)",
        &[(String::new(), oldest.to_string())],
    );
    gauges(
        &mut text,
        "coffer_x402_settlements",
        "x402 settlements by status (pending and submitted are in flight)",
        &by_status(&census.settlements),
    );
    text
}

/// A gauge family in OpenMetrics text, one line per series (`labels` as written inside the
/// braces; empty for none).
fn gauges(text: &mut String, name: &str, help: &str, series: &[(String, String)]) {
    use std::fmt::Write;

    let _ = writeln!(text, "# HELP {name} {help}.");
    let _ = writeln!(text, "# TYPE {name} gauge");
    for (labels, value) in series {
        if labels.is_empty() {
            let _ = writeln!(text, "{name} {value}");
        } else {
            let _ = writeln!(text, "{name}{{{labels}}} {value}");
        }
    }
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
