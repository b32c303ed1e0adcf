//! The calling merchant's payout wallets: where money goes out from, with what each holds.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::CallingMerchant;
use crate::error::{ApiError, ErrorBody};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(payout_wallets))
        .route("/api/payout-wallets", axum::routing::get(payout_wallets))
}

/// One balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    /// Token symbol, or the chain's native coin (`ETH`, `BNB`).
    pub currency: String,
    /// The token's contract; null for the native coin.
    pub token_address: Option<String>,
    /// The balance in token units, e.g. `"12.50"`.
    pub amount: String,
}

/// A payout wallet (its address only: its key never leaves Coffer).
#[derive(Debug, Serialize, ToSchema)]
pub struct PayoutWalletView {
    /// Coffer's key of the chain (`base-sepolia`).
    pub chain: String,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The wallet's address.
    pub address: String,
    /// The native coin first, then every token the chain's registry lists; null when the
    /// chain could not be asked (see `error`).
    pub balances: Option<Vec<BalanceView>>,
    /// Why `balances` is null.
    pub error: Option<String>,
}

/// `{"success": true, "data": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PayoutWalletsEnvelope {
    /// Always `true`.
    pub success: bool,
    /// The wallets, by chain id.
    pub data: Vec<PayoutWalletView>,
}

/// The calling merchant's payout wallets and their balances, read from each chain now. A
/// wallet is made with `coffer payout-wallet new --merchant … --chain …` (or `import`).
#[utoipa::path(
    get,
    path = "/api/payout-wallets/",
    tag = "merchant",
    security(("api_key" = [])),
    responses(
        (status = 200, body = PayoutWalletsEnvelope),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody)
    )
)]
#[tracing::instrument(skip_all)]
async fn payout_wallets(
    State(state): State<AppState>,
    CallingMerchant(merchant): CallingMerchant,
) -> Result<Json<PayoutWalletsEnvelope>, ApiError> {
    let wallets = state
        .gateway
        .payout_wallets
        .with_balances(&merchant.id)
        .await
        .map_err(|error| ApiError::internal(&error))?;
    let data = wallets
        .into_iter()
        .map(|wallet| PayoutWalletView {
            chain: wallet.chain,
            chain_id: wallet.chain_id,
            address: wallet.address,
            balances: wallet.balances.map(|balances| {
                balances
                    .into_iter()
                    .map(|b| BalanceView {
                        currency: b.currency,
                        token_address: b.token_address,
                        amount: b.amount,
                    })
                    .collect()
            }),
            error: wallet.error,
        })
        .collect();
    Ok(Json(PayoutWalletsEnvelope {
        success: true,
        data,
    }))
}
