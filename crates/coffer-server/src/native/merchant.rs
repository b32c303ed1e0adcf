//! The calling merchant.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::CallingMerchant;
use crate::error::ErrorBody;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(current_merchant))
}

/// A merchant as the API shows it (never its webhook secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantView {
    /// Public id, `mer_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Default webhook endpoint.
    pub webhook_url: Option<String>,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
}

/// `{"success": true, "data": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantEnvelope {
    /// Always `true`.
    pub success: bool,
    /// The merchant.
    pub data: MerchantView,
}

/// The merchant the API key belongs to.
#[utoipa::path(
    get,
    path = "/api/merchant",
    tag = "merchant",
    security(("api_key" = [])),
    responses(
        (status = 200, body = MerchantEnvelope),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody)
    )
)]
#[tracing::instrument(skip_all)]
async fn current_merchant(CallingMerchant(merchant): CallingMerchant) -> Json<MerchantEnvelope> {
    Json(MerchantEnvelope {
        success: true,
        data: MerchantView {
            id: merchant.id.to_string(),
            name: merchant.name,
            webhook_url: merchant.webhook_url,
            created_at: merchant
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
    })
}
