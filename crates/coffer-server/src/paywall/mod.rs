//! The x402 paywall: routes configured in `coffer.toml` are reverse-proxied to an upstream URL
//! and answer `402 Payment Required` until paid.
//!
//! A request without payment gets one 402 that both protocol versions read: the v2
//! `PAYMENT-REQUIRED` header (base64 JSON, CAIP-2 networks) and a v1 JSON body (v1 network names
//! only, `description` and `mimeType` always present, no `outputSchema`, an absolute `resource`
//! URL). Browsers (`Accept: text/html` and a `Mozilla` user agent) get an HTML page instead of
//! the JSON body.
//!
//! A paid request carries `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1). Coffer matches it
//! against freshly built requirements (v2: the echoed `accepted`, compared field by field with
//! addresses case-folded; v1: scheme and network), verifies it, forwards the request, and
//! settles only when the upstream answered below 400. The answer carries `PAYMENT-RESPONSE`
//! (v2) or `X-PAYMENT-RESPONSE` (v1). When settlement fails the upstream body is withheld and
//! the client gets a 402; when it is still pending (`settlement_pending`, the transaction is
//! broadcast and journaled) the body is delivered — the client is never asked to pay twice for
//! one authorization.
//!
//! Paths are matched and forwarded in canonical form ([`crate::paywall::request_path`]): the upstream
//! gets exactly the path that was matched and paid for, and a path whose canonical form leaves
//! the route its raw form falls under (`/premium/%2e%2e/hits`) is refused with a 400 before
//! anything is verified, settled or forwarded.
//!
//! A payment is single-use across every replica sharing the database: a paid request first
//! claims its authorization in the store ([`coffer_store::PaymentClaims`]), so a header seen
//! before — settled, being settled, or in flight in another replica — is refused as a replay.
//! The claim is released when nothing was settled (the upstream failed, or the client went
//! away mid-request and the request was dropped), and kept once settlement began; settlement
//! runs on its own task, so a request cut short never cuts a settlement in half.

pub mod request_path;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::Address;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use coffer_core::{Amount, ChainRegistry, TransferMethod};
use coffer_store::{NewPaymentClaim, SettlementKey, Store};
use coffer_x402::reasons::Reason;
use coffer_x402::settlement::SETTLEMENT_PENDING;
use coffer_x402::wire::{
    PayloadV1, PayloadV2, PaymentRequest, RequirementsV1, RequirementsV2, SettleResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::ops::metrics::RouteLabel;
use coffer_gateway::sales::settlement_key;
use request_path::PathError;

/// Header names the paywall reads and writes.
pub use coffer_x402::headers as x402_headers;

/// Largest request body forwarded upstream.
const MAX_BODY: usize = 10 * 1024 * 1024;

/// How long the paywall waits for an upstream's answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a claim on a payment lasts when the request holding it never releases it (its
/// replica died). Longer than any request may take (`server.request_timeout_seconds` is at most
/// 600), so a live request's claim never lapses.
const CLAIM_LEASE: Duration = Duration::from_secs(15 * 60);

/// One `[[paywall.routes]]` entry of `coffer.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaywallRouteConfig {
    /// Path pattern: an exact path (`/weather`) or a prefix ending in `/*` (`/premium/*`).
    pub path: String,
    /// HTTP method (`GET`, `POST`, …); any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Price in token units, e.g. `"0.01"`; never more decimals than the token has.
    pub price: String,
    /// Accepted networks (x402 v1 names or CAIP-2 ids), e.g. `["base-sepolia"]`.
    pub networks: Vec<String>,
    /// Accepted tokens by symbol; default `["USDC"]`. Only EIP-3009 tokens can be paid.
    #[serde(default = "default_assets")]
    pub assets: Vec<String>,
    /// Who is paid (an address; register it with `coffer payto add` to record sales as orders).
    pub pay_to: String,
    /// Where paid requests go: the upstream's base URL; the request path and query are appended.
    pub upstream: String,
    /// What is sold (shown to the payer).
    #[serde(default)]
    pub description: String,
    /// The MIME type of the resource.
    #[serde(default = "default_mime")]
    pub mime_type: String,
    /// How long the payer's authorization must stay valid; default 300.
    #[serde(default = "default_timeout")]
    pub max_timeout_seconds: u64,
}

fn default_assets() -> Vec<String> {
    vec!["USDC".to_owned()]
}

fn default_mime() -> String {
    "application/json".to_owned()
}

fn default_timeout() -> u64 {
    300
}

/// A configuration mistake, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("paywall.routes[{index}].{field}: {message}")]
pub struct PaywallConfigError {
    /// Which route.
    pub index: usize,
    /// Which field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// One way to pay a route.
#[derive(Debug, Clone)]
struct Accept {
    v1: Option<RequirementsV1>,
    v2: RequirementsV2,
}

/// A validated paywall route.
#[derive(Debug, Clone)]
pub struct PaywallRoute {
    /// The configured path (`/premium/*`), which is also the route's metrics label.
    label: RouteLabel,
    pattern: String,
    prefix: bool,
    method: Option<Method>,
    upstream: String,
    description: String,
    mime_type: String,
    accepts: Vec<Accept>,
    /// The price, for summaries (`0.01 USDC`).
    pub price_label: String,
}

impl PaywallRoute {
    /// The path pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The route as configured (`/premium/*`).
    pub fn label(&self) -> &str {
        self.label.as_str()
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        if self.prefix {
            path == self.pattern || path.starts_with(&format!("{}/", self.pattern))
        } else {
            path == self.pattern
        }
    }
}

/// The paywall's routes and its upstream client.
#[derive(Debug, Default)]
pub struct Paywall {
    routes: Vec<PaywallRoute>,
    client: reqwest::Client,
    public_url: String,
    /// The unpaid 402 of each resource URL served lately (body and `PAYMENT-REQUIRED`), so
    /// unpaid traffic costs no serialisation; bounded by [`CHALLENGE_CACHE_SIZE`].
    challenges: Mutex<HashMap<String, (Bytes, HeaderValue)>>,
}

/// How many resource URLs' 402 answers are kept ready.
const CHALLENGE_CACHE_SIZE: usize = 4096;

impl Paywall {
    /// Validates route configuration against the chain registry.
    ///
    /// # Errors
    /// [`PaywallConfigError`] naming the first bad field.
    pub fn new(
        configs: &[PaywallRouteConfig],
        chains: &ChainRegistry,
        public_url: &str,
    ) -> Result<Self, PaywallConfigError> {
        let mut routes = Vec::with_capacity(configs.len());
        for (index, config) in configs.iter().enumerate() {
            let error = |field, message: String| PaywallConfigError {
                index,
                field,
                message,
            };
            if !config.path.starts_with('/') {
                return Err(error("path", "must start with /".to_owned()));
            }
            let (pattern, prefix) = match config.path.strip_suffix("/*") {
                Some(base) => (base.to_owned(), true),
                None => (config.path.clone(), false),
            };
            let method = config
                .method
                .as_deref()
                .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()))
                .transpose()
                .map_err(|_| error("method", "is not an HTTP method".to_owned()))?;
            let pay_to: Address = config
                .pay_to
                .parse()
                .map_err(|_| error("pay_to", format!("{:?} is not a 0x address", config.pay_to)))?;
            let upstream = url::Url::parse(&config.upstream)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    error("upstream", "must be an http:// or https:// URL".to_owned())
                })?;
            if config.networks.is_empty() {
                return Err(error("networks", "name at least one network".to_owned()));
            }
            let mut accepts = Vec::new();
            let mut price_label = String::new();
            for network in &config.networks {
                let chain = chains
                    .by_name(network)
                    .ok_or_else(|| error("networks", format!("unknown network {network:?}")))?;
                for symbol in &config.assets {
                    let asset = chain
                        .asset_by_symbol(symbol)
                        .filter(|a| a.transfer_method == TransferMethod::Eip3009)
                        .ok_or_else(|| {
                            error(
                                "assets",
                                format!("{symbol:?} is not an EIP-3009 token on {}", chain.key()),
                            )
                        })?;
                    let amount = Amount::parse_decimal(config.price.trim(), asset.decimals)
                        .map_err(|e| error("price", format!("{:?}: {e}", config.price)))?;
                    if amount.is_zero() {
                        return Err(error("price", "must be greater than zero".to_owned()));
                    }
                    if price_label.is_empty() {
                        price_label = format!("{} {}", config.price.trim(), asset.symbol);
                    }
                    let extra = asset
                        .eip712
                        .as_ref()
                        .map(|d| json!({"name": d.name, "version": d.version}));
                    let v2 = RequirementsV2 {
                        scheme: "exact".to_owned(),
                        network: chain.names.caip2.clone(),
                        amount: amount.to_base_units_string(),
                        asset: asset.address.to_checksum(None),
                        pay_to: pay_to.to_checksum(None),
                        max_timeout_seconds: config.max_timeout_seconds,
                        extra: extra.clone(),
                    };
                    let v1 = Some(RequirementsV1 {
                        scheme: "exact".to_owned(),
                        network: chain.names.x402_v1.clone(),
                        max_amount_required: amount.to_base_units_string(),
                        resource: String::new(),
                        description: config.description.clone(),
                        mime_type: config.mime_type.clone(),
                        pay_to: pay_to.to_checksum(None),
                        max_timeout_seconds: config.max_timeout_seconds,
                        asset: asset.address.to_checksum(None),
                        output_schema: None,
                        extra,
                    });
                    accepts.push(Accept { v1, v2 });
                }
            }
            routes.push(PaywallRoute {
                label: RouteLabel::new(&config.path),
                pattern,
                prefix,
                method,
                upstream: upstream.as_str().trim_end_matches('/').to_owned(),
                description: config.description.clone(),
                mime_type: config.mime_type.clone(),
                accepts,
                price_label,
            });
        }
        Ok(Paywall {
            routes,
            client: reqwest::Client::builder()
                .timeout(UPSTREAM_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            challenges: Mutex::default(),
        })
    }

    /// The configured routes.
    pub fn routes(&self) -> &[PaywallRoute] {
        &self.routes
    }

    /// The route a request for a canonical path ([`request_path::normalize`]) falls under.
    pub fn route_for(&self, method: &Method, path: &str) -> Option<&PaywallRoute> {
        self.routes.iter().find(|r| r.matches(method, path))
    }

    /// Where a request that no API route took goes: the route its canonical path falls under,
    /// or nowhere, or a refusal when the path has no canonical form or its canonical form
    /// leaves the route its raw form falls under (`/premium/%2e%2e/hits`).
    pub fn resolve(&self, method: &Method, raw_path: &str) -> Resolution<'_> {
        if self.routes.is_empty() {
            return Resolution::NotFound;
        }
        let raw_route = self.route_for(method, raw_path);
        let path = match request_path::normalize(raw_path) {
            Ok(path) => path,
            Err(error) => {
                return Resolution::Refused {
                    route: raw_route,
                    refusal: PathRefusal::Invalid(error),
                };
            }
        };
        let route = self.route_for(method, &path);
        match (raw_route, route) {
            (Some(raw), route) if !route.is_some_and(|route| std::ptr::eq(route, raw)) => {
                Resolution::Refused {
                    route: Some(raw),
                    refusal: PathRefusal::OutsideRoute {
                        path,
                        route: raw.label().to_owned(),
                    },
                }
            }
            (_, Some(route)) => Resolution::Route { route, path },
            (_, None) => Resolution::NotFound,
        }
    }

    /// The 402 for a request without payment, from the cache when this resource was asked
    /// for before (its requirements only change with the configuration).
    fn unpaid(&self, challenge: &Challenge<'_>) -> Response<Body> {
        let cached = self
            .challenges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&challenge.resource)
            .cloned();
        let (body, required) = match cached {
            Some(ready) => ready,
            None => {
                let error = "Payment required";
                let body = Bytes::from(challenge.v1(error).to_string());
                let Ok(required) =
                    HeaderValue::from_str(&x402_headers::encode(&challenge.v2(error)))
                else {
                    return challenge.respond(StatusCode::PAYMENT_REQUIRED, error, None);
                };
                let mut challenges = self
                    .challenges
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if challenges.len() >= CHALLENGE_CACHE_SIZE {
                    challenges.clear();
                }
                challenges.insert(challenge.resource.clone(), (body.clone(), required.clone()));
                (body, required)
            }
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = StatusCode::PAYMENT_REQUIRED;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static(x402_headers::PAYMENT_REQUIRED),
            required,
        );
        expose(headers);
        response
    }
}

/// Where a request that no API route took goes (see [`Paywall::resolve`]).
#[derive(Debug)]
pub enum Resolution<'a> {
    /// A paywall route, with the canonical path to match and forward.
    Route {
        /// The route.
        route: &'a PaywallRoute,
        /// The canonical path.
        path: String,
    },
    /// No paywall route: a 404.
    NotFound,
    /// A 400: nothing is verified, settled or forwarded.
    Refused {
        /// The route the raw path falls under, if any.
        route: Option<&'a PaywallRoute>,
        /// Why.
        refusal: PathRefusal,
    },
}

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRefusal {
    /// The path has no canonical form.
    Invalid(PathError),
    /// The canonical path leaves the route the raw path falls under.
    OutsideRoute {
        /// The canonical path.
        path: String,
        /// The route as configured.
        route: String,
    },
}

impl PathRefusal {
    /// A stable, machine-readable code: `INVALID_PATH`, `PATH_OUTSIDE_ROOT` or
    /// `PATH_OUTSIDE_ROUTE`.
    pub fn code(&self) -> &'static str {
        match self {
            PathRefusal::Invalid(error) => error.code(),
            PathRefusal::OutsideRoute { .. } => "PATH_OUTSIDE_ROUTE",
        }
    }

    /// A message naming the field (`path: …`).
    pub fn message(&self) -> String {
        match self {
            PathRefusal::Invalid(error) => format!("path: {error}"),
            PathRefusal::OutsideRoute { path, route } => {
                format!("path: resolves to {path}, which is outside the paid route {route}")
            }
        }
    }
}

/// The 400 for a refused path under a paywall route, in the x402 error body.
pub fn refuse(route: &PaywallRoute, refusal: &PathRefusal) -> Response<Body> {
    let mut response = bad_request(refusal.code(), &refusal.message());
    response.extensions_mut().insert(route.label.clone());
    response
}

/// A paid request's claim on its authorization ([`coffer_store::PaymentClaims`]).
///
/// Dropped without [`PaymentClaim::keep`] or [`PaymentClaim::release`] — the request was cut
/// short: the client went away, or the request timed out — it is released on the runtime, so
/// the payment can be presented again instead of staying claimed until its lease lapses.
struct PaymentClaim {
    store: Arc<dyn Store>,
    key: SettlementKey,
    holder: String,
    open: bool,
}

impl PaymentClaim {
    /// Claims `key` for this request; `None` when another request holds it (a replay).
    async fn take(
        store: &Arc<dyn Store>,
        key: &SettlementKey,
    ) -> Result<Option<PaymentClaim>, coffer_store::StoreError> {
        let holder = hex::encode(rand::random::<[u8; 16]>());
        let now_ms = coffer_gateway::clock::now_ms();
        let lease_ms = i64::try_from(CLAIM_LEASE.as_millis()).unwrap_or(i64::MAX);
        let claimed = store
            .claim_payment(&NewPaymentClaim {
                key: key.clone(),
                holder: holder.clone(),
                now_ms,
                expires_at_ms: now_ms.saturating_add(lease_ms),
            })
            .await?;
        Ok(claimed.then(|| PaymentClaim {
            store: store.clone(),
            key: key.clone(),
            holder,
            open: true,
        }))
    }

    /// Settlement began: from now on the journal answers for the authorization, and the claim
    /// stays until its lease lapses.
    fn keep(mut self) {
        self.open = false;
    }

    /// Nothing was settled: the payment may be presented again.
    async fn release(mut self) {
        self.open = false;
        if let Err(error) = self.store.release_payment(&self.key, &self.holder).await {
            tracing::warn!(%error, "releasing a payment claim failed; it lapses with its lease");
        }
    }
}

impl Drop for PaymentClaim {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // A destructor cannot wait: the release runs on the runtime.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let key = self.key.clone();
        let holder = std::mem::take(&mut self.holder);
        runtime.spawn(async move {
            if let Err(error) = store.release_payment(&key, &holder).await {
                tracing::warn!(%error, "releasing a payment claim failed; it lapses with its lease");
            }
        });
    }
}

struct Challenge<'a> {
    route: &'a PaywallRoute,
    resource: String,
}

impl Challenge<'_> {
    fn v2(&self, error: &str) -> Value {
        let accepts: Vec<&RequirementsV2> = self.route.accepts.iter().map(|a| &a.v2).collect();
        json!({
            "x402Version": 2,
            "error": error,
            "resource": {
                "url": self.resource,
                "description": self.route.description,
                "mimeType": self.route.mime_type,
            },
            "accepts": accepts,
        })
    }

    fn v1_accepts(&self) -> Vec<RequirementsV1> {
        self.route
            .accepts
            .iter()
            .filter_map(|a| a.v1.clone())
            .map(|mut r| {
                r.resource.clone_from(&self.resource);
                r
            })
            .collect()
    }

    fn v1(&self, error: &str) -> Value {
        json!({"x402Version": 1, "error": error, "accepts": self.v1_accepts()})
    }

    /// A 402 (or `status`) with the v2 header and the v1 body.
    fn respond(
        &self,
        status: StatusCode,
        error: &str,
        extra: Option<(&str, String)>,
    ) -> Response<Body> {
        let mut response = Response::new(Body::from(self.v1(error).to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(value) = HeaderValue::from_str(&x402_headers::encode(&self.v2(error))) {
            headers.insert(
                HeaderName::from_static(x402_headers::PAYMENT_REQUIRED),
                value,
            );
        }
        if let Some((name, value)) = extra
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            )
        {
            headers.insert(name, value);
        }
        expose(headers);
        response
    }

    fn html(&self) -> Response<Body> {
        let escape = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let options: String = self
            .route
            .accepts
            .iter()
            .map(|a| {
                format!(
                    "<li><code>{}</code> base units of <code>{}</code> on <code>{}</code> to <code>{}</code></li>",
                    escape(&a.v2.amount),
                    escape(&a.v2.asset),
                    escape(&a.v2.network),
                    escape(&a.v2.pay_to)
                )
            })
            .collect();
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Payment required</title>\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#222}}\
             code{{background:#f3f3f3;padding:0 .2em;word-break:break-all}}</style></head><body>\
             <h1>Payment required</h1><p>{}</p><p>Price: <strong>{}</strong></p>\
             <p>This resource is sold over <a href=\"https://x402.org\">x402</a>. Fetch <code>{}</code> with an x402 \
             client (for example <code>@x402/fetch</code>) and it pays and retries by itself. Accepted:</p><ul>{}</ul>\
             </body></html>",
            escape(&self.route.description),
            escape(&self.route.price_label),
            escape(&self.resource),
            options
        );
        let mut response = Response::new(Body::from(page));
        *response.status_mut() = StatusCode::PAYMENT_REQUIRED;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        if let Ok(value) =
            HeaderValue::from_str(&x402_headers::encode(&self.v2("Payment required")))
        {
            headers.insert(
                HeaderName::from_static(x402_headers::PAYMENT_REQUIRED),
                value,
            );
        }
        expose(headers);
        response
    }
}

fn expose(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(x402_headers::EXPOSED),
    );
}

/// A browser: it asks for a page, and says it is one (x402 clients that send `Accept: */*`
/// or `text/html` without a browser's user agent get the JSON challenge).
fn is_browser(headers: &HeaderMap) -> bool {
    crate::pages::wants_html(headers)
        && headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|agent| agent.contains("Mozilla"))
}

fn lower(text: &str) -> String {
    text.trim().to_ascii_lowercase()
}

/// Whether a client's v2 `accepted` is the requirement Coffer built: every field equal, with
/// addresses compared case-insensitively and `extra` compared as JSON values.
pub fn same_requirement(accepted: &RequirementsV2, built: &RequirementsV2) -> bool {
    accepted.scheme == built.scheme
        && accepted.network == built.network
        && accepted.amount == built.amount
        && lower(&accepted.asset) == lower(&built.asset)
        && lower(&accepted.pay_to) == lower(&built.pay_to)
        && accepted.max_timeout_seconds == built.max_timeout_seconds
        && accepted.extra.clone().unwrap_or_else(|| json!({}))
            == built.extra.clone().unwrap_or_else(|| json!({}))
}

/// What a payment header says.
enum Payment {
    V1(Box<PayloadV1>),
    V2(Box<PayloadV2>),
}

fn parse_payment(headers: &HeaderMap) -> Option<Result<Payment, String>> {
    let (name, value, version) = if let Some(v) = headers.get(x402_headers::PAYMENT_SIGNATURE) {
        ("PAYMENT-SIGNATURE", v, 2)
    } else {
        ("X-PAYMENT", headers.get(x402_headers::X_PAYMENT)?, 1)
    };
    let parsed = (|| {
        let text = value.to_str().map_err(|_| format!("{name}: not ASCII"))?;
        let bytes =
            x402_headers::decode_bytes(text).ok_or_else(|| format!("{name}: not base64"))?;
        let json: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("{name}: not JSON: {e}"))?;
        let claimed = json.get("x402Version").and_then(Value::as_u64);
        match (version, claimed) {
            (2, Some(2)) => serde_json::from_value::<PayloadV2>(json)
                .map(|p| Payment::V2(Box::new(p)))
                .map_err(|e| format!("{name}: {e}")),
            (1, Some(1)) => serde_json::from_value::<PayloadV1>(json)
                .map(|p| Payment::V1(Box::new(p)))
                .map_err(|e| format!("{name}: {e}")),
            (_, other) => Err(format!(
                "{name}.x402Version: {other:?} does not match the header (version {version})"
            )),
        }
    })();
    Some(parsed)
}

fn bad_request(code: &str, message: &str) -> Response<Body> {
    let body = json!({"x402Version": 1, "error": message, "code": code});
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    expose(response.headers_mut());
    response
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

fn forwardable(name: &HeaderName) -> bool {
    let name = name.as_str();
    !HOP_BY_HOP.contains(&name)
        && name != x402_headers::PAYMENT_SIGNATURE
        && name != x402_headers::X_PAYMENT
        && name != "content-length"
}

/// Serves a request that falls under a paywall route; `path` is the canonical path
/// ([`Paywall::resolve`]), which is what the challenge names and what is forwarded.
pub async fn serve(
    state: &AppState,
    route: &PaywallRoute,
    path: &str,
    request: axum::extract::Request,
) -> Response<Body> {
    let mut response = serve_route(state, route, path, request).await;
    response.extensions_mut().insert(route.label.clone());
    response
}

async fn serve_route(
    state: &AppState,
    route: &PaywallRoute,
    path: &str,
    request: axum::extract::Request,
) -> Response<Body> {
    let paywall = &state.paywall;
    let (parts, body) = request.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let challenge = Challenge {
        route,
        resource: format!("{}{path}", paywall.public_url),
    };
    let payment = match parse_payment(&parts.headers) {
        None if is_browser(&parts.headers) => return challenge.html(),
        None => return paywall.unpaid(&challenge),
        Some(Err(message)) => return bad_request("INVALID_PAYMENT_HEADER", &message),
        Some(Ok(payment)) => payment,
    };
    let request = match payment {
        Payment::V2(payload) => {
            let Some(found) = route
                .accepts
                .iter()
                .find(|a| same_requirement(&payload.accepted, &a.v2))
            else {
                return challenge.respond(
                    StatusCode::PAYMENT_REQUIRED,
                    "No matching payment requirements",
                    None,
                );
            };
            PaymentRequest::V2 {
                requirements: found.v2.clone(),
                payload: *payload,
            }
        }
        Payment::V1(payload) => {
            let found = route
                .accepts
                .iter()
                .filter_map(|a| a.v1.as_ref())
                .find(|r| r.scheme == payload.scheme && r.network == payload.network);
            let Some(found) = found else {
                return challenge.respond(
                    StatusCode::PAYMENT_REQUIRED,
                    "No matching payment requirements",
                    None,
                );
            };
            let mut requirements = found.clone();
            requirements.resource.clone_from(&challenge.resource);
            PaymentRequest::V1 {
                requirements,
                payload: *payload,
            }
        }
    };
    let Some(key) = settlement_key(&state.gateway.chains, &request) else {
        return bad_request(
            "INVALID_PAYMENT_HEADER",
            "payload.authorization: from and nonce must be an address and 32 bytes of hex",
        );
    };
    // A header seen before — settled, being settled, or in flight in any replica — is a replay.
    let claim = match PaymentClaim::take(&state.gateway.store, &key).await {
        Ok(Some(claim)) => claim,
        Ok(None) => {
            return challenge.respond(
                StatusCode::PAYMENT_REQUIRED,
                "payment_already_used: this authorization was presented before",
                None,
            );
        }
        Err(error) => {
            tracing::error!(%error, "claiming a payment failed");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the payment store is unavailable; nothing was charged",
            );
        }
    };
    let purchase = Purchase {
        request,
        key: &key,
        claim,
    };
    let forwarded = Forwarded {
        parts,
        body,
        path_and_query,
    };
    paid(state, route, &challenge, purchase, forwarded).await
}

/// A payment claimed for one request: what to verify and settle, and the claim to release if
/// the request is not served.
struct Purchase<'a> {
    request: PaymentRequest,
    key: &'a SettlementKey,
    claim: PaymentClaim,
}

/// The request to forward upstream once paid.
struct Forwarded {
    parts: axum::http::request::Parts,
    body: Body,
    path_and_query: String,
}

async fn paid(
    state: &AppState,
    route: &PaywallRoute,
    challenge: &Challenge<'_>,
    purchase: Purchase<'_>,
    forwarded: Forwarded,
) -> Response<Body> {
    let Purchase {
        request,
        key,
        claim,
    } = purchase;
    let Forwarded {
        parts,
        body,
        path_and_query,
    } = forwarded;
    match state.gateway.store.settlement(key).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            claim.release().await;
            return challenge.respond(
                StatusCode::PAYMENT_REQUIRED,
                "payment_already_used: this authorization was settled before",
                None,
            );
        }
        Err(error) => {
            tracing::error!(%error, "reading the settlement journal failed");
            claim.release().await;
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the settlement journal is unavailable",
            );
        }
    }
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let verified = state.gateway.facilitator.verify(&request, now).await;
    let unavailable = Reason::ChainUnavailable.as_str(request.version());
    if verified.invalid_reason.as_deref() == Some(unavailable) {
        claim.release().await;
        let mut response = bad_request(
            "CHAIN_UNAVAILABLE",
            "the chain could not be reached; nothing was charged, retry",
        );
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return response;
    }
    if !verified.is_valid {
        claim.release().await;
        let reason = verified
            .invalid_reason
            .unwrap_or_else(|| "invalid_payment".to_owned());
        return challenge.respond(StatusCode::PAYMENT_REQUIRED, &reason, None);
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            claim.release().await;
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
    };
    let upstream = match forward(state, route, &parts, body, &path_and_query).await {
        Ok(upstream) => upstream,
        Err(error) => {
            claim.release().await;
            // The upstream's URL is the operator's and may carry a key: log it without one.
            let error = error.without_url();
            tracing::warn!(%error, upstream = %coffer_core::redact::redact_url(&route.upstream), "paywall upstream failed");
            return plain(
                StatusCode::BAD_GATEWAY,
                "the upstream did not answer; nothing was charged",
            );
        }
    };
    if upstream.status().as_u16() >= 400 {
        claim.release().await;
        return upstream;
    }
    let header_name = match request {
        PaymentRequest::V1 { .. } => x402_headers::X_PAYMENT_RESPONSE,
        PaymentRequest::V2 { .. } => x402_headers::PAYMENT_RESPONSE,
    };
    // Settlement and the sale's record run on their own task: a client that goes away or a
    // request timeout drops this future, never a settlement half done.
    let settlement = tokio::spawn(settle_and_record(
        state.clone(),
        request,
        now,
        route.description.clone(),
        claim,
    ));
    let settled = match settlement.await {
        Ok(settled) => settled,
        Err(error) => {
            tracing::error!(%error, "the settlement task failed");
            return plain(
                StatusCode::BAD_GATEWAY,
                "the settlement did not finish; present the same payment again for its outcome",
            );
        }
    };
    let pending = settled.error_reason.as_deref() == Some(SETTLEMENT_PENDING);
    if !settled.success && !pending {
        let reason = settled
            .error_reason
            .clone()
            .unwrap_or_else(|| "settlement_failed".to_owned());
        return challenge.respond(
            StatusCode::PAYMENT_REQUIRED,
            &reason,
            Some((header_name, x402_headers::encode(&settled))),
        );
    }
    with_payment_response(upstream, header_name, &settled)
}

/// Settles a paid request and records the sale; keeps the claim once the settlement was
/// journaled or sent, releases it when nothing was.
async fn settle_and_record(
    state: AppState,
    request: PaymentRequest,
    now: u64,
    description: String,
    claim: PaymentClaim,
) -> SettleResponse {
    let settled = state
        .gateway
        .settler
        // The paywall delivers on this answer: only a settlement this request made counts, never
        // one another purchase (a Pelago order, another route) made with the same payment.
        .settle_exclusive(&request, now, state.gateway.settle_timeout)
        .await;
    let pending = settled.error_reason.as_deref() == Some(SETTLEMENT_PENDING);
    if settled.success || pending {
        claim.keep();
    } else {
        claim.release().await;
    }
    if settled.success
        && let Err(error) = state
            .gateway
            .sales
            .record_settled(&request, &description)
            .await
    {
        tracing::warn!(%error, "recording a paywall sale failed; the reconciler retries");
    }
    settled
}

fn with_payment_response(
    mut response: Response<Body>,
    name: &'static str,
    settled: &SettleResponse,
) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(&x402_headers::encode(settled)) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
    expose(response.headers_mut());
    response
}

fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let body = json!({"error": message});
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    expose(response.headers_mut());
    response
}

async fn forward(
    state: &AppState,
    route: &PaywallRoute,
    parts: &axum::http::request::Parts,
    body: Bytes,
    path_and_query: &str,
) -> Result<Response<Body>, reqwest::Error> {
    let url = format!("{}{}", route.upstream, path_and_query);
    let mut outgoing = state
        .paywall
        .client
        .request(parts.method.clone(), url)
        .body(body);
    for (name, value) in &parts.headers {
        if forwardable(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let upstream = outgoing.send().await?;
    let status = upstream.status();
    let upstream_headers = upstream.headers().clone();
    let bytes = upstream.bytes().await?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &upstream_headers {
        if forwardable(name) {
            response.headers_mut().append(name, value.clone());
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use coffer_x402::wire::{Authorization, ExactEvmPayload};
    use proptest::prelude::*;

    use super::*;
    use coffer_gateway::hostile_input::{hostile_text, json_value};

    fn headers(name: &'static str, value: HeaderValue) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static(name), value);
        headers
    }

    prop_compose! {
        fn exact_payload()(texts in prop::collection::vec(hostile_text(), 7)) -> ExactEvmPayload {
            let mut texts = texts.into_iter();
            let mut next = || texts.next().unwrap_or_default();
            ExactEvmPayload {
                signature: next(),
                authorization: Authorization {
                    from: next(),
                    to: next(),
                    value: next(),
                    valid_after: next(),
                    valid_before: next(),
                    nonce: next(),
                },
            }
        }
    }

    prop_compose! {
        fn payload_v2()(
            texts in prop::collection::vec(hostile_text(), 5),
            max_timeout_seconds in any::<u64>(),
            payload in exact_payload(),
        ) -> PayloadV2 {
            let mut texts = texts.into_iter();
            let mut next = || texts.next().unwrap_or_default();
            PayloadV2 {
                x402_version: 2,
                resource: None,
                accepted: RequirementsV2 {
                    scheme: next(),
                    network: next(),
                    amount: next(),
                    asset: next(),
                    pay_to: next(),
                    max_timeout_seconds,
                    extra: Some(json!({"name": "USDC", "version": "2"})),
                },
                payload,
                extensions: None,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_header_bytes_are_refused_naming_the_header(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            v2 in any::<bool>(),
        ) {
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                return Ok(());
            };
            let name = if v2 { x402_headers::PAYMENT_SIGNATURE } else { x402_headers::X_PAYMENT };
            if let Some(Err(message)) = parse_payment(&headers(name, value)) {
                prop_assert!(
                    message.starts_with("PAYMENT-SIGNATURE") || message.starts_with("X-PAYMENT"),
                    "{}", message
                );
            }
        }

        #[test]
        fn base64_of_any_json_is_a_payment_or_refused_naming_the_header(
            value in json_value(),
            version in prop_oneof![Just(json!(1)), Just(json!(2)), json_value()],
            v2 in any::<bool>(),
        ) {
            let mut value = value;
            if let Some(object) = value.as_object_mut() {
                object.insert("x402Version".to_owned(), version);
            }
            let header = HeaderValue::from_str(&x402_headers::encode(&value)).unwrap();
            let name = if v2 { x402_headers::PAYMENT_SIGNATURE } else { x402_headers::X_PAYMENT };
            match parse_payment(&headers(name, header)) {
                Some(Ok(Payment::V1(_))) => prop_assert!(!v2),
                Some(Ok(Payment::V2(_))) => prop_assert!(v2),
                Some(Err(message)) => prop_assert!(
                    message.starts_with("PAYMENT-SIGNATURE") || message.starts_with("X-PAYMENT"),
                    "{}", message
                ),
                None => prop_assert!(false, "a payment header was present"),
            }
        }

        #[test]
        fn a_payment_header_reads_back_as_it_was_written(
            v2 in payload_v2(),
            network in hostile_text(),
            scheme in hostile_text(),
            payload in exact_payload(),
        ) {
            let header = HeaderValue::from_str(&x402_headers::encode(&v2)).unwrap();
            let Some(Ok(Payment::V2(read))) =
                parse_payment(&headers(x402_headers::PAYMENT_SIGNATURE, header))
            else {
                return Err(TestCaseError::fail("a version-2 payment"));
            };
            prop_assert_eq!(*read, v2);
            let v1 = PayloadV1 { x402_version: 1, scheme, network, payload };
            let header = HeaderValue::from_str(&x402_headers::encode(&v1)).unwrap();
            let Some(Ok(Payment::V1(read))) =
                parse_payment(&headers(x402_headers::X_PAYMENT, header))
            else {
                return Err(TestCaseError::fail("a version-1 payment"));
            };
            prop_assert_eq!(*read, v1);
        }
    }
}
