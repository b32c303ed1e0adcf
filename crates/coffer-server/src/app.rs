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
use coffer_store::Store;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::ops::metrics::{self, Metrics};
use crate::paywall::Paywall;
use alloy::signers::local::PrivateKeySigner;
use coffer_gateway::Gateway;
use coffer_gateway::facilitator_policy::FacilitatorPolicy;
use coffer_gateway::fiat::FiatRates;
use coffer_gateway::outbound::OutboundPolicy;
use coffer_x402::settlement::SettleOptions;

/// What every handler can reach: the payment core and what only HTTP needs.
#[derive(Clone)]
pub struct AppState {
    /// The payment core.
    pub gateway: Gateway,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// How long a readiness probe waits for each dependency.
    pub readiness_timeout: Duration,
    /// The x402 paywall's routes (none unless configured).
    pub paywall: Arc<Paywall>,
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
    /// State over a store and a registry (see [`Gateway::new`]), with default limits, no
    /// paywall routes and fresh metrics.
    ///
    /// # Errors
    /// [`coffer_evm::EvmError::InvalidUrl`] when a configured RPC URL does not parse.
    pub fn new(
        store: Arc<dyn Store>,
        chains: ChainRegistry,
        public_url: &str,
    ) -> Result<Self, coffer_evm::EvmError> {
        Ok(AppState::over(Gateway::new(store, chains, public_url)?))
    }

    /// State over a gateway built elsewhere.
    pub fn over(gateway: Gateway) -> Self {
        AppState {
            gateway,
            metrics: Arc::new(Metrics::new()),
            readiness_timeout: Duration::from_secs(3),
            paywall: Arc::new(Paywall::default()),
            limits: RequestLimits::default(),
        }
    }

    /// See [`Gateway::with_fiat_rates`].
    #[must_use]
    pub fn with_fiat_rates(self, rates: FiatRates) -> Self {
        self.map_gateway(|gateway| gateway.with_fiat_rates(rates))
    }

    /// See [`Gateway::with_facilitator_policy`].
    #[must_use]
    pub fn with_facilitator_policy(self, policy: FacilitatorPolicy) -> Self {
        self.map_gateway(|gateway| gateway.with_facilitator_policy(policy))
    }

    /// See [`Gateway::with_outbound_policy`].
    #[must_use]
    pub fn with_outbound_policy(self, policy: OutboundPolicy) -> Self {
        self.map_gateway(|gateway| gateway.with_outbound_policy(policy))
    }

    /// See [`Gateway::with_clock`].
    #[must_use]
    pub fn with_clock(self, clock: coffer_gateway::clock::Clock) -> Self {
        self.map_gateway(|gateway| gateway.with_clock(clock))
    }

    /// See [`Gateway::with_settlement`].
    #[must_use]
    pub fn with_settlement(self, signers: Vec<PrivateKeySigner>, options: SettleOptions) -> Self {
        self.map_gateway(|gateway| gateway.with_settlement(signers, options))
    }

    fn map_gateway(mut self, change: impl FnOnce(Gateway) -> Gateway) -> Self {
        self.gateway = change(self.gateway);
        self
    }
}

/// Every route, documented, with metrics, request tracing, the [`RequestLimits`] and the pages' security headers
/// ([`crate::pages::safety`]).
pub fn router(state: AppState) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(crate::ops::openapi::ApiDoc::openapi())
        .merge(crate::ops::health::routes())
        .merge(crate::native::merchant::routes())
        .merge(crate::native::payout_wallets::routes())
        .merge(crate::cryptopay::routes())
        .merge(crate::native::webhooks::routes())
        .merge(crate::pages::routes())
        .merge(crate::x402::routes())
        .merge(crate::okx::routes())
        .merge(crate::gatepay::routes())
        .merge(crate::pelago::routes())
        .merge(crate::ops::meta::routes())
        .split_for_parts();
    let deployment = crate::ops::openapi::Deployment::new(
        &state.gateway.chains,
        state
            .gateway
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
    let openapi = Arc::new(crate::ops::openapi::ServedDocument(
        crate::ops::openapi::finish(&openapi, &deployment),
    ));
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
            crate::pages::safety::secure_responses,
        ))
        .layer(middleware::map_response(crate::error::log_errors))
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
