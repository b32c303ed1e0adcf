//! A chain's RPC endpoints, tried in order with failover.
//!
//! RPC URLs carry API keys (`https://…/v2/<KEY>`, `?apikey=…`, `https://user:pass@host`), and
//! the HTTP client's errors append the URL they failed on. Every provider built here sits on
//! Coffer's own HTTP transport, which never logs its URL and removes it from every error before
//! anything above it can print one: error text from [`ChainRpc`] names an endpoint only as
//! `https://host/…`. `Debug` of [`ChainRpc`] shows the same redacted form.
//!
//! The transport also rides out what a public endpoint does in passing: a call that times out
//! (after 30 s), loses its connection, or meets an HTTP 408, 429 or 5xx is sent again up to
//! twice, after a jittered exponential pause; only then does its error reach the caller, who
//! fails over to the next endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::ClientBuilder;
use alloy::rpc::json_rpc::{RequestPacket, ResponsePacket};
use alloy::transports::http::reqwest;
use alloy::transports::{
    RpcError, TransportError, TransportErrorKind, TransportFut, TransportResult,
};
use coffer_core::Chain;

use crate::EvmError;

/// One endpoint: its provider, a printable URL and what its calls came to.
#[derive(Clone)]
struct Endpoint {
    printable: String,
    provider: DynProvider,
    stats: Arc<CallStats>,
}

/// What an endpoint's calls came to since start, counted by its transport.
#[derive(Debug, Default)]
struct CallStats {
    calls: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    micros: AtomicU64,
    /// Until when (ms since the Unix epoch) the failover passes this endpoint over.
    cool_until_ms: AtomicU64,
    /// How its recent calls went, for the failover's order.
    health: Health,
}

/// An endpoint's recent calls, weighted toward the latest: how long they took and how many
/// failed, in passing (a retry) or for good. Integer moving averages, each new call counting
/// for [`HEALTH_WEIGHT`] of the whole.
#[derive(Debug, Default)]
struct Health {
    /// Call time, retries and pauses included, in microseconds.
    micros: AtomicU64,
    /// Share of calls that needed a retry or failed, in parts per 1,024.
    failing: AtomicU64,
    /// When the last call ended (ms since the Unix epoch); 0 before the first.
    last_ms: AtomicU64,
}

/// Slack over twice the cheapest cost before an endpoint drops to the unhealthy tier, in µs.
const HEALTHY_SLACK_MICROS: u64 = 50_000;

/// A new call counts for 1/8 of an endpoint's health.
const HEALTH_WEIGHT: u64 = 8;

/// An endpoint not called for this long is judged afresh: it gets the next call (it may have
/// recovered).
const HEALTH_STALE: Duration = Duration::from_secs(60);

impl Health {
    fn record(&self, micros: u64, failed: bool, now_ms: u64) {
        let blend = |average: &AtomicU64, sample: u64, first: bool| {
            let old = average.load(Ordering::Relaxed);
            let new = if first {
                sample
            } else if sample >= old {
                old + (sample - old) / HEALTH_WEIGHT
            } else {
                old - (old - sample) / HEALTH_WEIGHT
            };
            average.store(new, Ordering::Relaxed);
        };
        let first = self.last_ms.load(Ordering::Relaxed) == 0;
        blend(&self.micros, micros, first);
        blend(&self.failing, if failed { 1_024 } else { 0 }, first);
        self.last_ms.store(now_ms.max(1), Ordering::Relaxed);
    }

    /// A cost to rank endpoints by, lower is better: the average call time, up to nine times
    /// more for an endpoint whose every call fails. An endpoint with nothing recent to judge it
    /// by costs nothing, so that it is tried.
    fn cost(&self, now_ms: u64) -> u64 {
        let last = self.last_ms.load(Ordering::Relaxed);
        let stale = u64::try_from(HEALTH_STALE.as_millis()).unwrap_or(u64::MAX);
        if last == 0 || now_ms.saturating_sub(last) > stale {
            return 0;
        }
        let micros = self.micros.load(Ordering::Relaxed);
        let failing = self.failing.load(Ordering::Relaxed);
        micros.saturating_mul(1_024 + 8 * failing) / 1_024
    }
}

/// A snapshot of one endpoint's calls since start, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointCalls {
    /// The chain's key (`base-sepolia`).
    pub chain: String,
    /// The endpoint as `https://host/…`, never its key.
    pub endpoint: String,
    /// Calls made (each counted once, however often it was sent).
    pub calls: u64,
    /// Calls that ended in a transport error after their retries (a JSON-RPC error is the
    /// node's answer, not counted here).
    pub errors: u64,
    /// Times a call was sent again after failing in passing.
    pub retries: u64,
    /// Time spent in calls, retries and pauses included, in microseconds.
    pub micros: u64,
}

/// The RPC endpoints configured for one chain.
#[derive(Clone)]
pub struct ChainRpc {
    chain: String,
    chain_id: u64,
    endpoints: Vec<Endpoint>,
    failover: DynProvider,
    /// The newest head a reader of this chain saw (0: none yet), shared by every clone.
    head: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for ChainRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainRpc")
            .field("chain", &self.chain)
            .field("chain_id", &self.chain_id)
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|endpoint| endpoint.printable.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What a readiness probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The endpoint that answered (credentials removed).
    pub endpoint: String,
    /// Its latest block number.
    pub block_number: u64,
}

/// Removes one endpoint's URL, and the secret parts of it, from error text.
#[derive(Debug, Clone)]
struct UrlScrubber {
    /// The URL as configured and as the HTTP client prints it.
    whole: Vec<String>,
    /// Parts that may carry a key: password, path, query, fragment.
    parts: Vec<String>,
    printable: String,
    /// Scheme, host and port only: what the HTTP client's errors name instead.
    bare: reqwest::Url,
}

impl UrlScrubber {
    fn new(configured: &str, parsed: &reqwest::Url) -> Self {
        let mut whole = vec![configured.to_owned(), parsed.to_string()];
        whole.sort_by_key(|form| std::cmp::Reverse(form.len()));
        whole.dedup();
        let path = parsed.path();
        let parts = [
            parsed.password(),
            (path.len() > 1).then_some(path),
            parsed.query(),
            parsed.fragment(),
            (!parsed.username().is_empty()).then(|| parsed.username()),
        ]
        .into_iter()
        .flatten()
        // Too short to be a key, and replacing it would mangle the message.
        .filter(|part| part.len() >= 4)
        .map(str::to_owned)
        .collect();
        let mut bare = parsed.clone();
        // These only fail for URLs that cannot have user info or a path (not http/https).
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        bare.set_path("");
        bare.set_query(None);
        bare.set_fragment(None);
        UrlScrubber {
            whole,
            parts,
            printable: printable_url(configured),
            bare,
        }
    }

    fn leaks(&self, text: &str) -> bool {
        matches!(coffer_core::redact::redact_urls(text), std::borrow::Cow::Owned(ref redacted) if redacted != text)
            || self.whole.iter().any(|form| text.contains(form.as_str()))
            || self.parts.iter().any(|part| text.contains(part.as_str()))
    }

    fn clean(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for form in &self.whole {
            text = text.replace(form.as_str(), &self.printable);
        }
        let mut text = coffer_core::redact::redact_urls(&text).into_owned();
        for part in &self.parts {
            text = text.replace(part.as_str(), "…");
        }
        text
    }

    /// The same error without the URL: reqwest's errors name only scheme, host and port, and
    /// any other text that still holds it is rewritten. The error's kind (and so whether it is retryable) stays.
    fn scrub(&self, error: TransportError) -> TransportError {
        match error {
            RpcError::Transport(TransportErrorKind::Custom(inner)) => {
                let inner = match inner.downcast::<reqwest::Error>() {
                    Ok(reqwest_error) => Box::new(reqwest_error.with_url(self.bare.clone())),
                    Err(other) => other,
                };
                let text = inner.to_string();
                if self.leaks(&text) {
                    TransportErrorKind::custom_str(&self.clean(&text))
                } else {
                    RpcError::Transport(TransportErrorKind::Custom(inner))
                }
            }
            RpcError::Transport(TransportErrorKind::NonRetryable(inner))
                if self.leaks(&inner.to_string()) =>
            {
                RpcError::Transport(TransportErrorKind::NonRetryable(
                    self.clean(&inner.to_string()).into(),
                ))
            }
            RpcError::Transport(TransportErrorKind::HttpError(mut http))
                if self.leaks(&http.body) =>
            {
                http.body = self.clean(&http.body);
                RpcError::Transport(TransportErrorKind::HttpError(http))
            }
            RpcError::Transport(TransportErrorKind::HttpErrorWithRetryAfter {
                mut error,
                retry_after,
            }) if self.leaks(&error.body) => {
                error.body = self.clean(&error.body);
                RpcError::Transport(TransportErrorKind::HttpErrorWithRetryAfter {
                    error,
                    retry_after,
                })
            }
            RpcError::DeserError { err, text } if self.leaks(&text) => RpcError::DeserError {
                err,
                text: self.clean(&text),
            },
            RpcError::ErrorResp(mut payload) if self.leaks(&payload.message) => {
                payload.message = self.clean(&payload.message).into();
                RpcError::ErrorResp(payload)
            }
            other => other,
        }
    }
}

/// Coffer's HTTP JSON-RPC transport. It does what alloy's reqwest transport does (POST the
/// request packet as JSON, a JSON-RPC error in a non-2xx answer is still an answer, `Retry-After`
/// is kept for retries), but never prints its URL: alloy's transport records the whole URL in a
/// debug span, so every event under it (connection, response body, …) would carry the key to
/// any log at debug level. Errors come out through [`UrlScrubber::scrub`].
#[derive(Clone)]
struct RpcHttp {
    client: reqwest::Client,
    url: reqwest::Url,
    scrubber: Arc<UrlScrubber>,
    stats: Arc<CallStats>,
}

impl RpcHttp {
    async fn send(self, request: RequestPacket) -> TransportResult<ResponsePacket> {
        let response = self
            .client
            .post(self.url)
            .json(&request)
            .headers(request.headers())
            .send()
            .await
            .map_err(TransportErrorKind::custom)?;
        let status = response.status();
        // A delay the server asks for, delay-seconds form only.
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok())
            .map(Duration::from_secs);
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) if !status.is_success() => {
                return Err(TransportErrorKind::http_error_with_retry_after(
                    status.as_u16(),
                    format!("<failed to read response body: {error}>"),
                    retry_after,
                ));
            }
            Err(error) => return Err(TransportErrorKind::custom(error)),
        };
        tracing::trace!(%status, bytes = body.len(), "RPC answer");
        // A JSON-RPC error is an answer, whatever the HTTP status (some nodes send one with an
        // error status). Its message is the node's text, which may quote the URL or its key
        // ("invalid api key at /v2/…"): it is cleaned before anyone reads it.
        if let Ok(packet) = serde_json::from_slice::<ResponsePacket>(&body)
            && packet.is_error()
        {
            let text = String::from_utf8_lossy(&body);
            if self.scrubber.leaks(&text) {
                if let Ok(clean) = serde_json::from_str(&self.scrubber.clean(&text)) {
                    return Ok(clean);
                }
                return Err(TransportErrorKind::custom_str(
                    "the node answered an error quoting its endpoint",
                ));
            }
            return Ok(packet);
        }
        if !status.is_success() {
            return Err(TransportErrorKind::http_error_with_retry_after(
                status.as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
                retry_after,
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|error| TransportError::deser_err(error, String::from_utf8_lossy(&body)))
    }
}

impl tower::Service<RequestPacket> for RpcHttp {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // reqwest is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RequestPacket) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let (outcome, retries) = this.call_with_retries(request).await;
            let stats = &this.stats;
            stats.calls.fetch_add(1, Ordering::Relaxed);
            if outcome.is_err() {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            stats.micros.fetch_add(micros, Ordering::Relaxed);
            stats
                .health
                .record(micros, outcome.is_err() || retries > 0, now_ms());
            outcome
        })
    }
}

impl RpcHttp {
    /// Sends `request`, again after a pause while it fails in passing (see [`is_transient`]);
    /// the outcome, and how many times it was sent again.
    async fn call_with_retries(
        &self,
        request: RequestPacket,
    ) -> (TransportResult<ResponsePacket>, u32) {
        let mut retries = 0;
        loop {
            match self.clone().send(request.clone()).await {
                Err(error) if retries < MAX_RETRIES && is_transient(&error) => {
                    retries += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let pause = backoff(retries, &error);
                    tracing::debug!(
                        retries,
                        pause_ms = pause.as_millis() as u64,
                        error = %self.scrubber.scrub(error),
                        "RPC call failed in passing; asking again"
                    );
                    tokio::time::sleep(pause).await;
                }
                outcome => {
                    return (outcome.map_err(|error| self.scrubber.scrub(error)), retries);
                }
            }
        }
    }
}

/// How many times a call that failed in passing is sent again before its error is returned
/// (and the caller fails over to the next endpoint).
const MAX_RETRIES: u32 = 2;

/// How long one call may take, answer included, before it counts as failed in passing.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether an error is one a public endpoint gives in passing, so asking again may succeed:
/// a timeout, a connection dropped mid-call, or an HTTP 408, 429 or 5xx from the endpoint or a
/// proxy before it. A JSON-RPC error is the node's answer, and an endpoint that refuses the
/// connection is down: neither is asked again here (failover to the next endpoint is the
/// caller's). Sending a call again is safe for every call Coffer makes: reads, and raw
/// transactions, which the node knows by hash.
fn is_transient(error: &TransportError) -> bool {
    match error {
        RpcError::Transport(
            TransportErrorKind::HttpError(http)
            | TransportErrorKind::HttpErrorWithRetryAfter { error: http, .. },
        ) => matches!(http.status, 408 | 429 | 500 | 502 | 503 | 504),
        RpcError::Transport(TransportErrorKind::Custom(inner)) => {
            inner.downcast_ref::<reqwest::Error>().is_some_and(|error| {
                error.is_timeout()
                    || (!error.is_connect() && (error.is_request() || error.is_body()))
            })
        }
        _ => false,
    }
}

/// The pause before retry `retry` (1, 2, …): 50–100 ms, then 100–200 ms, at random within
/// the range, so callers that failed together do not ask again together; a `Retry-After` up
/// to a second is honoured.
fn backoff(retry: u32, error: &TransportError) -> Duration {
    use std::hash::{BuildHasher, Hasher};

    if let RpcError::Transport(TransportErrorKind::HttpErrorWithRetryAfter {
        retry_after: after,
        ..
    }) = error
    {
        return (*after).min(Duration::from_secs(1));
    }
    let ceiling_ms = 50u64 << retry.min(6);
    // A fresh RandomState is seeded differently each time: enough randomness for jitter.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(ceiling_ms / 2 + random % (ceiling_ms / 2 + 1))
}

/// Coffer's transport for `url`, which never prints it, in errors or logs.
fn transport_for(configured: &str, url: reqwest::Url, stats: Arc<CallStats>) -> RpcHttp {
    let scrubber = Arc::new(UrlScrubber::new(configured, &url));
    let client = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .unwrap_or_default();
    RpcHttp {
        client,
        url,
        scrubber,
        stats,
    }
}

/// A provider over `transport`.
fn provider_over<T>(transport: T, is_local: bool) -> DynProvider
where
    T: tower::Service<
            RequestPacket,
            Response = ResponsePacket,
            Error = TransportError,
            Future = TransportFut<'static>,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    let client = ClientBuilder::default().transport(transport, is_local);
    ProviderBuilder::new().connect_client(client).erased()
}

/// How long an endpoint that failed a call is passed over by [`FailoverHttp`].
const COOLDOWN: Duration = Duration::from_secs(30);

/// One chain's endpoints as one transport: a call goes to the healthiest endpoint that is not
/// cooling down; an endpoint whose call fails (a transport error after its retries, or an
/// answer that is not JSON-RPC) cools down for [`COOLDOWN`] and the call goes on to the next.
/// Health ranks endpoints in two tiers: those whose recent calls cost at most twice the
/// cheapest (plus 50 ms), in configured order, then the rest — so the first configured
/// endpoint keeps the traffic while it is about as good as the others, and one that is slow
/// or fails in passing loses it until it has been left alone for [`HEALTH_STALE`]. When every
/// endpoint is cooling down they are tried anyway. A JSON-RPC error is the node's answer and
/// is returned as it is.
#[derive(Clone)]
struct FailoverHttp {
    transports: Arc<[RpcHttp]>,
}

impl FailoverHttp {
    /// Endpoint indexes in the order a call tries them: those not cooling down first, the
    /// healthy tier before the rest, configured order within each.
    fn order(&self) -> Vec<usize> {
        let now = now_ms();
        let costs: Vec<u64> = self
            .transports
            .iter()
            .map(|transport| transport.stats.health.cost(now))
            .collect();
        let cheapest = costs.iter().copied().min().unwrap_or(0);
        let mut order: Vec<usize> = (0..self.transports.len()).collect();
        order.sort_by_key(|&index| {
            let cooling = self.transports[index]
                .stats
                .cool_until_ms
                .load(Ordering::Relaxed)
                > now;
            let unhealthy = costs[index] > cheapest.saturating_mul(2) + HEALTHY_SLACK_MICROS;
            (cooling, unhealthy)
        });
        order
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

impl tower::Service<RequestPacket> for FailoverHttp {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RequestPacket) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let mut failure = None;
            for index in this.order() {
                let mut transport = this.transports[index].clone();
                match tower::Service::call(&mut transport, request.clone()).await {
                    Ok(answer) => return Ok(answer),
                    Err(error) => {
                        let stats = &transport.stats;
                        let cooldown = u64::try_from(COOLDOWN.as_millis()).unwrap_or(u64::MAX);
                        stats
                            .cool_until_ms
                            .store(now_ms().saturating_add(cooldown), Ordering::Relaxed);
                        tracing::warn!(%error, endpoint = index, "RPC endpoint failed; trying the next");
                        failure = Some(error);
                    }
                }
            }
            Err(failure
                .unwrap_or_else(|| TransportErrorKind::custom_str("no RPC endpoint configured")))
        })
    }
}

impl ChainRpc {
    /// Builds providers for every configured URL of `chain`.
    ///
    /// # Errors
    /// [`EvmError::InvalidUrl`] for a URL that does not parse.
    pub fn new(chain: &Chain) -> Result<Self, EvmError> {
        let mut endpoints = Vec::new();
        let mut transports = Vec::new();
        let mut all_local = true;
        for url in &chain.rpc_urls {
            let parsed: reqwest::Url = url
                .parse()
                .map_err(|_| EvmError::InvalidUrl(printable_url(url)))?;
            let is_local = alloy::transports::utils::guess_local_url(parsed.as_str());
            all_local &= is_local;
            let stats = Arc::new(CallStats::default());
            let transport = transport_for(url, parsed, stats.clone());
            endpoints.push(Endpoint {
                printable: printable_url(url),
                provider: provider_over(transport.clone(), is_local),
                stats,
            });
            transports.push(transport);
        }
        let failover = provider_over(
            FailoverHttp {
                transports: transports.into(),
            },
            all_local,
        );
        Ok(ChainRpc {
            chain: chain.key().to_owned(),
            chain_id: chain.chain_id,
            endpoints,
            failover,
            head: Arc::default(),
        })
    }

    /// Records `number` as the chain's head, as the watcher read it.
    pub fn note_head(&self, number: u64) {
        self.head
            .store(number, std::sync::atomic::Ordering::Relaxed);
    }

    /// The head last recorded with [`ChainRpc::note_head`], if any.
    pub fn last_head(&self) -> Option<u64> {
        match self.head.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            head => Some(head),
        }
    }

    /// A provider over every endpoint of the chain: a call goes to the healthiest endpoint
    /// that has not failed in the last 30 s (ranked as [`ChainRpc::healthiest_except`] ranks
    /// them), and fails over to the next
    /// when it fails. What one-off calls (the facilitator's, the settler's) use. `None` when
    /// the chain has no endpoint.
    pub fn provider(&self) -> Option<&DynProvider> {
        (!self.endpoints.is_empty()).then_some(&self.failover)
    }

    /// The endpoint to move to from `current` (which failed): among the others, the first in
    /// configured order whose recent calls cost at most twice the cheapest's plus 50 ms, as
    /// the failover provider ranks them. `None` with a single endpoint.
    pub fn healthiest_except(&self, current: usize) -> Option<usize> {
        let now = now_ms();
        let costs: Vec<(usize, u64)> = (0..self.endpoints.len())
            .filter(|index| *index != current)
            .map(|index| (index, self.endpoints[index].stats.health.cost(now)))
            .collect();
        let cheapest = costs.iter().map(|(_, cost)| *cost).min()?;
        costs
            .iter()
            .find(|(_, cost)| *cost <= cheapest.saturating_mul(2) + HEALTHY_SLACK_MICROS)
            .map(|(index, _)| *index)
    }

    /// The chain's key.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// How many endpoints there are.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// What each endpoint's calls came to since start (for metrics).
    pub fn calls(&self) -> Vec<EndpointCalls> {
        self.endpoints
            .iter()
            .map(|endpoint| EndpointCalls {
                chain: self.chain.clone(),
                endpoint: endpoint.printable.clone(),
                calls: endpoint.stats.calls.load(Ordering::Relaxed),
                errors: endpoint.stats.errors.load(Ordering::Relaxed),
                retries: endpoint.stats.retries.load(Ordering::Relaxed),
                micros: endpoint.stats.micros.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Endpoint `index` (modulo the count) as `(printable URL, provider)`, for callers that
    /// rotate through endpoints on failure.
    pub fn endpoint(&self, index: usize) -> Option<(&str, &DynProvider)> {
        let count = self.endpoints.len();
        (count > 0).then(|| {
            let endpoint = &self.endpoints[index % count];
            (endpoint.printable.as_str(), &endpoint.provider)
        })
    }

    /// Asks each endpoint in turn for its chain id and latest block, returning the first that
    /// answers for the right chain within `timeout`.
    ///
    /// # Errors
    /// [`EvmError::WrongChain`] when an endpoint serves another chain (and none serves this
    /// one), [`EvmError::Unreachable`] when none answers.
    pub async fn probe(&self, timeout: Duration) -> Result<Probe, EvmError> {
        let mut last = EvmError::Unreachable {
            chain: self.chain.clone(),
            last: "no RPC URL configured".to_owned(),
        };
        for endpoint in &self.endpoints {
            let attempt = async {
                let chain_id = endpoint.provider.get_chain_id().await?;
                let block_number = endpoint.provider.get_block_number().await?;
                Ok::<_, EvmError>((chain_id, block_number))
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok((chain_id, block_number))) if chain_id == self.chain_id => {
                    return Ok(Probe {
                        endpoint: endpoint.printable.clone(),
                        block_number,
                    });
                }
                Ok(Ok((actual, _))) => {
                    last = EvmError::WrongChain {
                        chain: self.chain.clone(),
                        url: endpoint.printable.clone(),
                        expected: self.chain_id,
                        actual,
                    };
                }
                Ok(Err(error)) => {
                    tracing::warn!(chain = %self.chain, endpoint = %endpoint.printable, %error, "RPC endpoint failed");
                    last = EvmError::Unreachable {
                        chain: self.chain.clone(),
                        last: error.to_string(),
                    };
                }
                Err(_) => {
                    tracing::warn!(chain = %self.chain, endpoint = %endpoint.printable, "RPC endpoint timed out");
                    last = EvmError::Unreachable {
                        chain: self.chain.clone(),
                        last: format!("{} timed out after {timeout:?}", endpoint.printable),
                    };
                }
            }
        }
        Err(last)
    }
}

/// An RPC URL safe to log: scheme, host and port only, since providers put API keys in paths,
/// query strings and user info (see [`coffer_core::redact::redact_url`]).
pub fn printable_url(url: &str) -> String {
    coffer_core::redact::redact_url(url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use std::sync::atomic::AtomicUsize;

    use alloy::providers::Provider;
    use coffer_core::{ChainOverride, ChainRegistry};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const SECRETS: [&str; 4] = ["SEKRETKEY123", "SEKRETKEY456", "SEKRETPASS", "sekretuser"];

    /// A local endpoint that hangs up at once (`close`) or answers 502 echoing the request
    /// line, as some proxies do.
    async fn broken_endpoint(close: bool) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                if close {
                    drop(socket);
                    continue;
                }
                let mut head = vec![0u8; 4096];
                let read = socket.read(&mut head).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&head[..read])
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let body =
                    format!("bad gateway: {line} via http://127.0.0.1:{port}/v2/SEKRETKEY123");
                let answer = format!(
                    "HTTP/1.1 502 Bad Gateway\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    fn rpc_for(urls: Vec<String>) -> ChainRpc {
        let mut registry = ChainRegistry::builtin();
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "base-sepolia".to_owned(),
            ChainOverride {
                rpc_urls: urls,
                ..ChainOverride::default()
            },
        );
        registry.apply(&overrides).unwrap();
        ChainRpc::new(registry.by_name("base-sepolia").unwrap()).unwrap()
    }

    fn assert_clean(text: &str) {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }

    #[tokio::test]
    async fn transport_errors_never_carry_the_endpoint_url() {
        for close in [true, false] {
            let port = broken_endpoint(close).await;
            let urls = vec![
                format!("http://127.0.0.1:{port}/v2/SEKRETKEY123?apikey=SEKRETKEY456"),
                format!("http://sekretuser:SEKRETPASS@127.0.0.1:{port}"),
            ];
            let rpc = rpc_for(urls);
            for index in 0..rpc.endpoint_count() {
                let (printable, provider) = rpc.endpoint(index).unwrap();
                assert_clean(printable);
                let error = provider.get_block_number().await.unwrap_err();
                let text = error.to_string();
                assert_clean(&text);
                assert_clean(&format!("{error:?}"));
                assert!(text.contains("127.0.0.1") || !close, "{text}");
            }
            let probe = rpc.probe(Duration::from_secs(2)).await.unwrap_err();
            assert_clean(&probe.to_string());
            assert_clean(&format!("{rpc:?}"));
        }
    }

    /// A node that answers every call with a JSON-RPC error quoting the path it was called at
    /// (and the whole URL), as some providers do for a bad key.
    async fn echoing_node() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = vec![0u8; 8192];
                let read = socket.read(&mut head).await.unwrap_or(0);
                let path = String::from_utf8_lossy(&head[..read])
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let body = format!(
                    r#"{{"jsonrpc":"2.0","id":0,"error":{{"code":-32000,"message":"invalid api key at {path} http://127.0.0.1:{port}{path}"}}}}"#
                );
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn a_node_quoting_its_key_in_an_error_answer_is_cleaned() {
        let port = echoing_node().await;
        let rpc = rpc_for(vec![format!(
            "http://127.0.0.1:{port}/v2/SEKRETKEY123?apikey=SEKRETKEY456"
        )]);
        let (_, provider) = rpc.endpoint(0).unwrap();
        let error = provider.get_block_number().await.unwrap_err();
        let text = error.to_string();
        assert_clean(&text);
        assert_clean(&format!("{error:?}"));
        assert!(
            text.contains("invalid api key"),
            "still the node's answer: {text}"
        );
        assert_clean(
            &rpc.probe(Duration::from_secs(2))
                .await
                .unwrap_err()
                .to_string(),
        );
    }

    /// A node that answers its first `failures` calls with `status` (as a proxy in front of it
    /// would) and every later `eth_blockNumber` with block 16; it counts the calls.
    async fn flaky_node(status: u16, failures: usize) -> (u16, Arc<AtomicUsize>) {
        test_node(status, move |call| call < failures, Duration::ZERO).await
    }

    /// A node that answers every call right, after `delay`; it counts the calls.
    async fn slow_node(delay: Duration) -> (u16, Arc<AtomicUsize>) {
        test_node(502, |_| false, delay).await
    }

    /// A node that answers every other request with 502 (each call is answered on its
    /// retry); it counts the requests.
    async fn alternating_node() -> (u16, Arc<AtomicUsize>) {
        test_node(502, |call| call % 2 == 0, Duration::ZERO).await
    }

    /// A node that answers request number `n` (from 0) with `status` when `fails(n)`, else
    /// `eth_blockNumber` with block 16, each after `delay`; it counts the requests.
    async fn test_node(
        status: u16,
        fails: impl Fn(usize) -> bool + Send + 'static,
        delay: Duration,
    ) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = vec![0u8; 8192];
                let read = socket.read(&mut request).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&request[..read]).into_owned();
                let id = text
                    .split("\r\n\r\n")
                    .nth(1)
                    .and_then(|body| serde_json::from_str::<serde_json::Value>(body).ok())
                    .map(|call| call["id"].clone())
                    .unwrap_or_default();
                tokio::time::sleep(delay).await;
                let answer = if fails(counted.fetch_add(1, Ordering::SeqCst)) {
                    format!(
                        "HTTP/1.1 {status} Failing\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops"
                    )
                } else {
                    let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"0x10"}}"#);
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (port, calls)
    }

    #[tokio::test]
    async fn a_call_that_fails_in_passing_is_asked_again_and_answered() {
        for status in [429, 502, 503, 504] {
            let (port, calls) = flaky_node(status, 2).await;
            let rpc = rpc_for(vec![format!("http://127.0.0.1:{port}")]);
            let (_, provider) = rpc.endpoint(0).unwrap();
            assert_eq!(provider.get_block_number().await.unwrap(), 16, "{status}");
            assert_eq!(calls.load(Ordering::SeqCst), 3, "{status}: two retries");
        }
    }

    #[tokio::test]
    async fn retries_are_bounded_and_other_errors_are_not_retried() {
        let (port, calls) = flaky_node(502, usize::MAX).await;
        let rpc = rpc_for(vec![format!("http://127.0.0.1:{port}")]);
        let (_, provider) = rpc.endpoint(0).unwrap();
        let error = provider.get_block_number().await.unwrap_err();
        assert!(error.to_string().contains("502"), "{error}");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "one call and two retries");

        // A 4xx other than 408 and 429 is the endpoint's answer (a bad key): asked once.
        let (port, calls) = flaky_node(401, usize::MAX).await;
        let rpc = rpc_for(vec![format!("http://127.0.0.1:{port}")]);
        let (_, provider) = rpc.endpoint(0).unwrap();
        provider.get_block_number().await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A JSON-RPC error is the node's answer: asked once.
        let port = echoing_node().await;
        let rpc = rpc_for(vec![format!("http://127.0.0.1:{port}")]);
        let (_, provider) = rpc.endpoint(0).unwrap();
        let started = std::time::Instant::now();
        provider.get_block_number().await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "no pause before answering"
        );
    }

    #[tokio::test]
    async fn the_chain_provider_fails_over_and_passes_over_a_failed_endpoint() {
        // The first endpoint refuses connections; the second answers.
        let down = broken_endpoint(true).await;
        let (up, answered) = flaky_node(502, 0).await;
        let rpc = rpc_for(vec![
            format!("http://127.0.0.1:{down}/v2/SEKRETKEY123"),
            format!("http://127.0.0.1:{up}"),
        ]);
        let provider = rpc.provider().unwrap();
        assert_eq!(provider.get_block_number().await.unwrap(), 16);
        assert_eq!(provider.get_block_number().await.unwrap(), 16);
        assert_eq!(answered.load(Ordering::SeqCst), 2);
        let calls = rpc.calls();
        assert_eq!(
            (calls[0].calls, calls[0].errors),
            (1, 1),
            "the failed endpoint is passed over for the second call"
        );
        assert_eq!((calls[1].calls, calls[1].errors), (2, 0));
        assert_clean(&format!("{calls:?}"));

        // Every endpoint down: the last error, without the URL.
        let rpc = rpc_for(vec![format!("http://127.0.0.1:{down}/v2/SEKRETKEY123")]);
        let error = rpc
            .provider()
            .unwrap()
            .get_block_number()
            .await
            .unwrap_err();
        assert_clean(&error.to_string());
        let none = rpc_for(Vec::new());
        assert!(none.provider().is_none());
    }

    #[tokio::test]
    async fn calls_move_to_a_healthier_endpoint_and_stay_with_the_first_while_it_is_as_good() {
        // The first endpoint answers, but slowly; the second at once.
        let (slow, slow_calls) = slow_node(Duration::from_millis(300)).await;
        let (fast, fast_calls) = flaky_node(502, 0).await;
        let rpc = rpc_for(vec![
            format!("http://127.0.0.1:{slow}"),
            format!("http://127.0.0.1:{fast}"),
        ]);
        let provider = rpc.provider().unwrap();
        for _ in 0..10 {
            assert_eq!(provider.get_block_number().await.unwrap(), 16);
        }
        assert_eq!(
            slow_calls.load(Ordering::SeqCst),
            1,
            "the slow endpoint had one call to judge it by"
        );
        assert_eq!(fast_calls.load(Ordering::SeqCst), 9);

        // One that fails in passing on every call (a retry each time) loses the traffic too.
        let (flaky, flaky_calls) = alternating_node().await;
        let (steady, steady_calls) = flaky_node(502, 0).await;
        let rpc = rpc_for(vec![
            format!("http://127.0.0.1:{flaky}"),
            format!("http://127.0.0.1:{steady}"),
        ]);
        let provider = rpc.provider().unwrap();
        for _ in 0..10 {
            assert_eq!(provider.get_block_number().await.unwrap(), 16);
        }
        assert_eq!(
            flaky_calls.load(Ordering::SeqCst),
            2,
            "one call, answered on its retry"
        );
        assert_eq!(steady_calls.load(Ordering::SeqCst), 9);

        // Two endpoints alike: the first configured keeps every call.
        let (first, first_calls) = flaky_node(502, 0).await;
        let (second, second_calls) = flaky_node(502, 0).await;
        let rpc = rpc_for(vec![
            format!("http://127.0.0.1:{first}"),
            format!("http://127.0.0.1:{second}"),
        ]);
        let provider = rpc.provider().unwrap();
        for _ in 0..10 {
            assert_eq!(provider.get_block_number().await.unwrap(), 16);
        }
        assert!(
            first_calls.load(Ordering::SeqCst) >= 9,
            "the second was tried at most once: {}",
            second_calls.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn the_healthiest_other_endpoint_is_the_first_about_as_good_as_the_best() {
        let (slow, _) = slow_node(Duration::from_millis(300)).await;
        let (fast, _) = flaky_node(502, 0).await;
        let (current, _) = flaky_node(502, 0).await;
        let rpc = rpc_for(vec![
            format!("http://127.0.0.1:{current}"),
            format!("http://127.0.0.1:{slow}"),
            format!("http://127.0.0.1:{fast}"),
        ]);
        assert_eq!(
            rpc.healthiest_except(0),
            Some(1),
            "nothing known yet: configured order"
        );
        for index in [1, 2] {
            let (_, provider) = rpc.endpoint(index).unwrap();
            assert_eq!(provider.get_block_number().await.unwrap(), 16);
        }
        assert_eq!(
            rpc.healthiest_except(0),
            Some(2),
            "the slow one is passed over"
        );
        assert_eq!(rpc.healthiest_except(2), Some(0), "unknown costs nothing");
        assert_eq!(
            rpc_for(vec![format!("http://127.0.0.1:{fast}")]).healthiest_except(0),
            None
        );
    }

    #[test]
    fn pauses_grow_and_stay_within_their_range() {
        let failed = TransportErrorKind::http_error(502, String::new());
        for _ in 0..100 {
            let first = backoff(1, &failed);
            let second = backoff(2, &failed);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            assert!((100..=200).contains(&second.as_millis()), "{second:?}");
        }
        let asked = TransportErrorKind::http_error_with_retry_after(
            429,
            String::new(),
            Some(Duration::from_secs(60)),
        );
        assert_eq!(backoff(1, &asked), Duration::from_secs(1), "capped");
    }

    #[test]
    fn printable_urls_hide_keys_in_paths_and_user_info() {
        assert_eq!(
            printable_url("https://base-mainnet.g.alchemy.com/v2/SECRET"),
            "https://base-mainnet.g.alchemy.com/…"
        );
        assert_eq!(
            printable_url("https://user:pw@rpc.example:8545"),
            "https://rpc.example:8545/…"
        );
        assert_eq!(
            printable_url("http://127.0.0.1:8545"),
            "http://127.0.0.1:8545"
        );
        assert_eq!(printable_url("nonsense"), "<invalid url>");
    }
}
