//! Liveness and readiness.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use coffer_core::redact::redact_urls;
use futures_util::future::join_all;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `"ok"`.
    pub status: &'static str,
}

/// Is the process alive? Answers without touching any dependency.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
#[tracing::instrument(skip_all)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// One dependency's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    /// Whether it answered.
    pub ok: bool,
    /// Latest block, for chains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_number: Option<u64>,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `"ready"` or `"not_ready"`.
    pub status: &'static str,
    /// The database.
    pub database: Check,
    /// Each configured chain's RPC, by chain key.
    pub chains: BTreeMap<String, Check>,
}

/// Can this replica serve? Checks the database and each configured chain's RPC (any of its
/// endpoints, for the right chain id). 503 when any check fails; the reasons name an endpoint
/// only by scheme, host and port (RPC URLs carry API keys).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Every dependency answered", body = Readiness),
        (status = 503, description = "Some dependency did not answer", body = Readiness)
    )
)]
#[tracing::instrument(skip_all)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let timeout = state.readiness_timeout;
    let database = match tokio::time::timeout(timeout, state.gateway.store.ping()).await {
        Ok(Ok(())) => Check {
            ok: true,
            block_number: None,
            error: None,
        },
        Ok(Err(error)) => Check {
            ok: false,
            block_number: None,
            error: Some(redact_urls(&error.to_string()).into_owned()),
        },
        Err(_) => Check {
            ok: false,
            block_number: None,
            error: Some(format!("no answer within {timeout:?}")),
        },
    };
    let probes = state.gateway.rpcs.iter().map(|rpc| async move {
        let check = match rpc.probe(timeout).await {
            Ok(probe) => Check {
                ok: true,
                block_number: Some(probe.block_number),
                error: None,
            },
            Err(error) => Check {
                ok: false,
                block_number: None,
                error: Some(redact_urls(&error.to_string()).into_owned()),
            },
        };
        (rpc.chain().to_owned(), check)
    });
    let chains: BTreeMap<_, _> = join_all(probes).await.into_iter().collect();
    let ready = database.ok && chains.values().all(|check| check.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        database,
        chains,
    };
    (status, Json(body))
}
