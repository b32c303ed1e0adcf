//! The application: shared state, the router, and a server that shuts down gracefully.
//!
//! What one client can take is bounded. [`serve_with`] serves HTTP/1.1 through hyper with a
//! timer, so a client must send a request's headers within
//! [`ConnectionLimits::header_read_timeout`] (a slowloris client is disconnected), and it holds
//! at most [`ConnectionLimits::max_connections`] connections (more wait in the listen
//! backlog). [`router`] answers a request that takes longer than
//! [`RequestLimits::request_timeout`] (a slow body or handler) with 408 `REQUEST_TIMEOUT`, and
//! sheds requests past [`RequestLimits::max_concurrent_requests`] with 503 `OVERLOADED` and
//! `Retry-After`, both in the native error envelope. Request bodies read by the API's extractors
//! stay limited to 2 MB (axum's default; 413 past it).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use coffer_core::ChainRegistry;
use coffer_evm::rpc::ChainRpc;
use coffer_store::Store;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::facilitator_policy::{FacilitatorGate, FacilitatorPolicy};
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
    /// Who may use the facilitator routes, and how much.
    pub facilitator_gate: Arc<FacilitatorGate>,
    /// How long a request may take and how many are handled at once.
    pub limits: RequestLimits,
}

/// Limits on requests, applied by [`router`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// How long a request may take, body and handler, before it is answered 408. Above the
    /// longest a handler waits on purpose (the paywall's upstream and a settlement's receipt),
    /// so a paid request is not cut while it settles.
    pub request_timeout: Duration,
    /// Requests handled at once; more are answered 503 with `Retry-After` (liveness and metrics
    /// are always answered).
    pub max_concurrent_requests: usize,
    /// How long a request's body may take to arrive. It is read before the request takes one of
    /// the `max_concurrent_requests` slots, so a client sending slowly holds its connection,
    /// never a slot; past this it is answered 408.
    pub body_read_timeout: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            request_timeout: Duration::from_secs(120),
            max_concurrent_requests: 1024,
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Limits on connections, applied by [`serve_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request's headers, counted from the start of the
    /// connection or the end of the previous response; a slower one is disconnected.
    pub header_read_timeout: Duration,
    /// Connections held at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Connections held at once from one client address (an IPv6 address by its /64); more are
    /// closed at once, so one client cannot take every connection.
    pub max_connections_per_client: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_client: 1024,
        }
    }
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
            facilitator_gate: Arc::new(FacilitatorGate::default()),
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
            limits: RequestLimits::default(),
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

    /// Admits facilitator requests under `policy` (the default: payments to registered payTo
    /// addresses only, at least 0.001 token units, rate-limited per payer and client).
    #[must_use]
    pub fn with_facilitator_policy(mut self, policy: FacilitatorPolicy) -> Self {
        self.facilitator_gate = Arc::new(FacilitatorGate::new(policy));
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

/// Every route, documented, with metrics, request tracing, the [`RequestLimits`] and the pages' security headers
/// ([`crate::page_safety`]).
pub fn router(state: AppState) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
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
    let deployment = crate::openapi::Deployment::new(
        &state.chains,
        state
            .orders
            .fiat_rates()
            .currencies()
            .map(|(fiat, tokens)| {
                (
                    fiat.to_owned(),
                    tokens.into_iter().map(str::to_owned).collect(),
                )
            })
            .collect(),
    );
    let openapi = Arc::new(crate::openapi::ServedDocument(crate::openapi::finish(
        &openapi,
        &deployment,
    )));
    let gate = Arc::new(RequestGate {
        timeout: state.limits.request_timeout,
        body_timeout: state.limits.body_read_timeout,
        permits: Arc::new(Semaphore::new(state.limits.max_concurrent_requests.max(1))),
    });
    router
        .fallback(paywall_or_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(gate, limit_request))
        .layer(middleware::map_response(
            crate::page_safety::secure_responses,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(axum::Extension(openapi))
        .with_state(state)
}

/// The shared state of [`limit_request`].
struct RequestGate {
    timeout: Duration,
    body_timeout: Duration,
    permits: Arc<Semaphore>,
}

/// The most of a body read before the request takes a slot: the largest any API route accepts.
/// A larger body (a paywall route forwards up to 10 MB) streams on from there.
const BUFFERED_BODY: usize = 2 * 1024 * 1024;

/// Reads a body up to [`BUFFERED_BODY`] bytes; a longer one is given back as what was read
/// followed by the rest, still streaming, so that the route's own limit refuses it in its
/// family's words.
async fn buffered(body: axum::body::Body) -> Result<axum::body::Body, axum::Error> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        read.extend_from_slice(&chunk?);
        if read.len() > BUFFERED_BODY {
            let head =
                futures_util::stream::iter([Ok::<_, axum::Error>(axum::body::Bytes::from(read))]);
            return Ok(axum::body::Body::from_stream(head.chain(stream)));
        }
    }
    Ok(axum::body::Body::from(read))
}

/// The answer to a request that took too long: 408, and the connection closed, since its body
/// may be half read.
fn too_slow(message: String) -> axum::response::Response {
    let mut response =
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT", message).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Paths answered whatever the load: constant-time, and what orchestrators and scrapers poll.
pub(crate) const NEVER_SHED: [&str; 2] = ["/healthz", "/metrics"];

/// Sheds a request when the server is full, and answers one that outlives the request timeout.
async fn limit_request(
    axum::extract::State(gate): axum::extract::State<Arc<RequestGate>>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    // The body first, within its own deadline: a slow sender holds its connection, not a slot.
    let (parts, body) = request.into_parts();
    let body_deadline = gate.body_timeout.min(gate.timeout);
    let body = match tokio::time::timeout(body_deadline, buffered(body)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return ApiError::field("INVALID_BODY", "body", "the body could not be read")
                .into_response();
        }
        Err(_) => {
            return too_slow(format!(
                "the request body did not arrive within {} seconds",
                body_deadline.as_secs_f64()
            ));
        }
    };
    let request = axum::extract::Request::from_parts(parts, body);
    let permit = gate.permits.clone().try_acquire_owned();
    if permit.is_err() && !NEVER_SHED.contains(&request.uri().path()) {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "OVERLOADED",
            "the server is handling as many requests as it may; retry shortly",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    match tokio::time::timeout(gate.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => too_slow(format!(
            "the request did not complete within {} seconds",
            gate.timeout.as_secs_f64()
        )),
    }
}

/// Requests no API route took: a paywall route's (matched on the canonical path), a 400 for a
/// path that has no canonical form or leaves its paywall route, or a 404.
async fn paywall_or_not_found(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use crate::paywall::Resolution;
    let paywall = state.paywall.clone();
    match paywall.resolve(request.method(), request.uri().path()) {
        Resolution::Route { route, path } => {
            crate::paywall::serve(&state, route, &path, request).await
        }
        Resolution::Refused {
            route: Some(route),
            refusal,
        } => crate::paywall::refuse(route, &refusal),
        Resolution::Refused {
            route: None,
            refusal,
        } => ApiError::field(
            refusal.code(),
            "path",
            refusal.message().trim_start_matches("path: "),
        )
        .into_response(),
        Resolution::NotFound => not_found(request.uri().clone()).await.into_response(),
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

/// Serves `router` on `listener` with the default [`ConnectionLimits`] until `shutdown`
/// completes, then stops accepting connections and waits for requests in flight to finish.
///
/// # Errors
/// The I/O error if serving fails.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, ConnectionLimits::default(), shutdown).await
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then stops
/// accepting connections, closes idle ones and waits for requests in flight to finish. Each
/// request carries the client's address as [`ConnectInfo`]`<SocketAddr>`.
///
/// # Errors
/// The I/O error if serving fails.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    // HTTP/1.1 only, as axum::serve was built here; the timer is what makes hyper enforce the
    // header-read timeout.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_client = Arc::new(ClientConnections::new(limits.max_connections_per_client));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    wait_after_accept_error(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // One client may not hold every connection: past its share, it is closed at once.
        let Some(share) = per_client.enter(client.ip()) else {
            drop(stream);
            continue;
        };
        let service = router.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(client));
                request.map(axum::body::Body::new)
            },
        );
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, %client, "connection ended with an error");
            }
            drop(share);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Connections held per client address (an IPv6 address by its /64, which one client holds
/// whole).
struct ClientConnections {
    limit: usize,
    held: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its client until dropped.
struct ClientShare {
    clients: Arc<ClientConnections>,
    key: IpAddr,
}

impl ClientConnections {
    fn new(limit: usize) -> Self {
        ClientConnections {
            limit: limit.max(1),
            held: std::sync::Mutex::default(),
        }
    }

    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let [a, b, c, d, ..] = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
                }
            },
            v4 => v4,
        }
    }

    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<ClientShare> {
        let key = Self::key(ip);
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = held.entry(key).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientShare {
            clients: self.clone(),
            key,
        })
    }
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut held = self
            .clients
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// After a failed accept: at once for an error of that one connection, after a second for the
/// others (such as running out of file descriptors, which closing connections frees).
async fn wait_after_accept_error(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
