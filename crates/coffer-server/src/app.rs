//! The application: shared state, the router, and a server that shuts down gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use coffer_core::ChainRegistry;
use coffer_evm::rpc::ChainRpc;
use coffer_store::Store;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::fiat::FiatRates;
use crate::gatepay::GatePayCredentials;
use crate::merchants::Merchants;
use crate::metrics::{self, Metrics};
use crate::okx::OkxCredentials;
use crate::orders::PaymentOrders;
use crate::outbound::OutboundPolicy;
use crate::paywall::Paywall;
use crate::routes;
use crate::sales::X402Sales;
use alloy::signers::local::PrivateKeySigner;
use coffer_x402::facilitator::Facilitator;
use coffer_x402::settlement::{SettleOptions, Settler};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Merchants and API keys.
    pub merchants: Merchants,
    /// Payment orders.
    pub orders: PaymentOrders,
    /// The x402 facilitator (verification).
    pub facilitator: Facilitator,
    /// The x402 settlement engine.
    pub settler: Arc<Settler>,
    /// How long a synchronous settlement waits for its receipt.
    pub settle_timeout: Duration,
    /// OKX-style credentials.
    pub okx: OkxCredentials,
    /// GatePay-style credentials.
    pub gatepay: GatePayCredentials,
    /// Base URL for links Coffer hands out (payment pages).
    pub public_url: String,
    /// Known chains.
    pub chains: Arc<ChainRegistry>,
    /// RPC clients of the configured chains.
    pub rpcs: Arc<Vec<ChainRpc>>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// How long a readiness probe waits for each dependency.
    pub readiness_timeout: Duration,
    /// Wakes the webhook dispatcher when new events were written.
    pub webhook_wakeup: Arc<tokio::sync::Notify>,
    /// x402 settlements recorded as orders.
    pub sales: X402Sales,
    /// The x402 paywall's routes (none unless configured).
    pub paywall: Arc<Paywall>,
    /// Where webhooks and callbacks may go: checked when a merchant sets a URL and when the
    /// dispatcher connects. Strict (public addresses only) unless changed with
    /// [`AppState::with_outbound_policy`].
    pub outbound: Arc<OutboundPolicy>,
}

impl AppState {
    /// State over a store and a registry, with RPC clients for every configured chain; links
    /// are built on `public_url`. Webhooks and callbacks may go to public addresses only.
    ///
    /// # Errors
    /// [`coffer_evm::EvmError::InvalidUrl`] when a configured RPC URL does not parse.
    pub fn new(
        store: Arc<dyn Store>,
        chains: ChainRegistry,
        public_url: &str,
    ) -> Result<Self, coffer_evm::EvmError> {
        let rpcs = chains
            .configured()
            .map(ChainRpc::new)
            .collect::<Result<Vec<_>, _>>()?;
        let chains = Arc::new(chains);
        let rpcs = Arc::new(rpcs);
        let facilitator = Facilitator::new(
            chains.clone(),
            rpcs.clone(),
            alloy::primitives::Address::ZERO,
        );
        let webhook_wakeup = Arc::new(tokio::sync::Notify::new());
        let orders = PaymentOrders::new(store.clone(), chains.clone(), public_url.to_owned());
        let sales = X402Sales::new(
            store.clone(),
            chains.clone(),
            rpcs.clone(),
            orders.clone(),
            webhook_wakeup.clone(),
        );
        let outbound = Arc::new(OutboundPolicy::strict());
        Ok(AppState {
            sales,
            outbound,
            paywall: Arc::new(Paywall::default()),
            settler: Arc::new(Settler::new(
                facilitator.clone(),
                store.clone(),
                rpcs.clone(),
                Vec::new(),
                SettleOptions::default(),
            )),
            facilitator,
            settle_timeout: SettleOptions::default().receipt_timeout,
            okx: OkxCredentials::new(store.clone()),
            gatepay: GatePayCredentials::new(store.clone()),
            merchants: Merchants::new(store.clone()),
            orders,
            public_url: public_url.trim_end_matches('/').to_owned(),
            store,
            chains,
            rpcs,
            metrics: Arc::new(Metrics::new()),
            readiness_timeout: Duration::from_secs(3),
            webhook_wakeup,
        })
    }
}

impl AppState {
    /// Converts fiat prices with `rates` (the default table has the stablecoins at 1:1 to USD).
    #[must_use]
    pub fn with_fiat_rates(mut self, rates: FiatRates) -> Self {
        self.orders = self.orders.with_fiat_rates(rates);
        self
    }

    /// Sends webhooks and callbacks where `policy` allows, and checks merchants' URLs with it
    /// (`coffer dev` and tests with local endpoints allow loopback).
    #[must_use]
    pub fn with_outbound_policy(mut self, policy: OutboundPolicy) -> Self {
        let policy = Arc::new(policy);
        self.merchants = self.merchants.with_outbound_policy(policy.clone());
        self.orders = self.orders.with_outbound_policy(policy.clone());
        self.outbound = policy;
        self
    }

    /// Configures the x402 settlement signers (the first one also simulates verifications).
    pub fn with_settlement(
        mut self,
        signers: Vec<PrivateKeySigner>,
        options: SettleOptions,
    ) -> Self {
        let caller = signers
            .first()
            .map_or(alloy::primitives::Address::ZERO, PrivateKeySigner::address);
        self.facilitator = Facilitator::new(self.chains.clone(), self.rpcs.clone(), caller);
        self.settle_timeout = options.receipt_timeout;
        self.settler = Arc::new(Settler::new(
            self.facilitator.clone(),
            self.store.clone(),
            self.rpcs.clone(),
            signers,
            options,
        ));
        self
    }
}

/// Coffer's OpenAPI document; routes add themselves through [`router`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Coffer",
        description = "Self-hosted crypto payment gateway. Authenticate with \
            `Authorization: Bearer <api key>` (or `Merchant-App-Key: <api key>`).",
        license(name = "Apache-2.0")
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&ApiKeyScheme)
)]
struct ApiDoc;

struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route, documented, with metrics and request tracing.
pub fn router(state: AppState) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::health::routes())
        .merge(routes::merchant::routes())
        .merge(routes::payment_orders::routes())
        .merge(routes::webhooks::routes())
        .merge(routes::pay_page::routes())
        .merge(routes::x402::routes())
        .merge(routes::okx::routes())
        .merge(routes::gatepay::routes())
        .merge(routes::pelago::routes())
        .merge(routes::meta::routes())
        .split_for_parts();
    let openapi = Arc::new(openapi);
    router
        .fallback(paywall_or_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(axum::Extension(openapi))
        .with_state(state)
}

/// Requests no API route took: a paywall route's, or a 404.
async fn paywall_or_not_found(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let paywall = state.paywall.clone();
    match paywall.route_for(request.method(), request.uri().path()) {
        Some(route) => crate::paywall::serve(&state, route, request).await,
        None => not_found(request.uri().clone()).await.into_response(),
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route for {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting connections
/// and waits for requests in flight to finish.
///
/// # Errors
/// The I/O error if serving fails.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
