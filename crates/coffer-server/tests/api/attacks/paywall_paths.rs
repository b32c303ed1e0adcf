//! Attack 5: paying the cheap route to reach another path, and using one payment twice.
//!
//! A paywall route `/premium/*` is sold for 0.01 USDC and proxied to an upstream that also
//! serves `/hits`, which nobody sells. The attacker pays `/premium/%2e%2e/hits` and variants
//! (encoded dots, encoded slashes and backslashes, `//..`, double encoding); every one must be a
//! 400 that reaches nothing upstream and settles nothing. A payer whose client goes away
//! mid-request must be able to present the same payment again (it is not stuck as "in flight"),
//! and the same payment sent to two replicas sharing one database at once reaches the upstream
//! and the chain at most once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::Provider;
use coffer_server::AppState;
use coffer_store::testing::Backend;
use coffer_x402::settlement::SettleOptions;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::kit::{self, Auth, Env, Options, PAY_TO, RawResponse, paywall_route, raw_request};

/// The route's price in base units (0.01 USDC).
pub const PRICE: u64 = 10_000;

/// The seller's upstream: it serves `/premium/…` and `/hits` (which is not for sale) and
/// records every path that reaches it.
pub struct Upstream {
    pub url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

struct Behaviour {
    seen: Arc<Mutex<Vec<String>>>,
    calls: AtomicU64,
    /// How long each of the first `slow_calls` answers takes.
    delay: Duration,
    slow_calls: u64,
}

impl Upstream {
    /// An upstream that answers at once.
    pub async fn start() -> Upstream {
        Upstream::slow(Duration::ZERO, 0).await
    }

    /// An upstream whose first `slow_calls` answers each take `delay`.
    pub async fn slow(delay: Duration, slow_calls: u64) -> Upstream {
        use axum::extract::State;
        use axum::http::Uri;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Behaviour {
            seen: seen.clone(),
            calls: AtomicU64::new(0),
            delay,
            slow_calls,
        });
        let router = axum::Router::new()
            .fallback(
                |State(behaviour): State<Arc<Behaviour>>, uri: Uri| async move {
                    let path = uri
                        .path_and_query()
                        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
                    behaviour.seen.lock().unwrap().push(path.clone());
                    let call = behaviour.calls.fetch_add(1, Ordering::SeqCst) + 1;
                    if call <= behaviour.slow_calls {
                        tokio::time::sleep(behaviour.delay).await;
                    }
                    if path.starts_with("/hits") {
                        axum::Json(json!({"secret": "the upstream's own hit counter"}))
                    } else {
                        axum::Json(json!({"quote": "paid content", "path": path}))
                    }
                },
            )
            .with_state(behaviour);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Upstream { url, seen }
    }

    /// Every path (with query) that reached the upstream, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests reached a path starting with `prefix`.
    pub fn calls_to(&self, prefix: &str) -> usize {
        self.seen().iter().filter(|p| p.starts_with(prefix)).count()
    }
}

/// Installs `GET /premium/*` for 0.01 USDC on the test chain, paid to the merchant's payTo,
/// on a state.
pub fn with_paywall(state: AppState, upstream: &str) -> AppState {
    kit::with_paywall(state, &[paywall_route("/premium/*", upstream)])
}

/// An environment on `backend` whose paywall sells `/premium/*` from `upstream`.
pub fn paywalled(backend: Backend, upstream: &Upstream) -> Options {
    let upstream = upstream.url.clone();
    Options::on(backend).configure(move |state| with_paywall(state, &upstream))
}

/// A fresh v1 `X-PAYMENT` of the route's price from the env's payer.
pub fn payment(env: &Env) -> String {
    let auth = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
    auth.x_payment(auth.payload(&env.payer))
}

/// What the chain says about money moved: the signer's transaction count, the payer's and the
/// payTo's balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ledger {
    pub signer_transactions: u64,
    pub payer: U256,
    pub pay_to: U256,
}

pub async fn ledger(env: &Env) -> Ledger {
    Ledger {
        signer_transactions: env.signer_transactions().await,
        payer: env.balance(env.payer.address()).await,
        pay_to: env.balance(PAY_TO).await,
    }
}

/// The ledger after exactly one sale at the route's price.
fn one_sale_after(before: Ledger) -> Ledger {
    Ledger {
        signer_transactions: before.signer_transactions + 1,
        payer: before.payer - U256::from(PRICE),
        pay_to: before.pay_to + U256::from(PRICE),
    }
}

fn is_replay(response: &RawResponse) -> bool {
    response.status == 402
        && response.body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("payment_already_used"))
}

#[tokio::test]
async fn paying_the_cheap_route_never_reaches_another_path() {
    let upstream = Upstream::start().await;
    let env = Env::with(paywalled(Backend::Sqlite, &upstream)).await;
    let before = ledger(&env).await;

    let attacks = [
        "/premium/%2e%2e/hits",
        "/premium/%2E%2E/hits",
        "/premium/.%2e/hits",
        "/premium/%2e./hits",
        "/premium/..%2fhits",
        "/premium/..%2Fhits",
        "/premium/%2e%2e%5chits",
        "/premium/..%5Chits",
        "/premium/..\\hits",
        "/premium//../hits",
        "/premium/%252e%252e/hits",
        "/premium/%252e%252e%252fhits",
        "/premium/quote/../../hits",
        "/premium/..;/hits",
        "/premium/%c0%ae%c0%ae/hits",
        "/premium/%00/../../hits",
        "/premium/../../../hits",
        "/premium/%2e%2e/hits?x=1",
    ];
    for target in attacks {
        for paid in [true, false] {
            let header = payment(&env);
            let headers: &[(&str, &str)] = if paid { &[("X-PAYMENT", &header)] } else { &[] };
            let answer = raw_request(&env.base, "GET", target, headers, b"").await;
            assert_eq!(answer.status, 400, "{target} (paid: {paid}): {answer:?}");
            // hyper refuses a raw backslash itself, before Coffer sees it; every other form is
            // refused by Coffer with a stable code naming the path.
            if target.contains('\\') {
                continue;
            }
            let code = answer.body["code"].as_str().unwrap_or_default();
            assert!(
                ["PATH_OUTSIDE_ROUTE", "INVALID_PATH", "PATH_OUTSIDE_ROOT"].contains(&code),
                "{target}: {answer:?}"
            );
            assert!(
                answer.body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("path: "),
                "{target}: {answer:?}"
            );
        }
    }
    // Outside every paid route, an ambiguous path is refused in the native envelope.
    let answer = raw_request(&env.base, "GET", "/elsewhere/..%2fpremium/quote", &[], b"").await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.body["error"]["code"], "INVALID_PATH", "{answer:?}");
    assert_eq!(answer.body["error"]["field"], "path", "{answer:?}");

    assert_eq!(
        upstream.seen(),
        Vec::<String>::new(),
        "nothing reached the upstream"
    );
    assert_eq!(ledger(&env).await, before, "nothing was settled");
    assert!(env.orders().await.is_empty(), "no sale was recorded");

    // The route itself still sells, and what is forwarded is exactly the canonical path that
    // was matched and paid for.
    let header = payment(&env);
    let answer = raw_request(
        &env.base,
        "GET",
        "/premium/a/%2e%2e/./%71uote?x=1",
        &[("X-PAYMENT", &header)],
        b"",
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(upstream.seen(), vec!["/premium/quote?x=1".to_owned()]);
    assert_eq!(ledger(&env).await, one_sale_after(before));
}

/// A paid request whose client goes away while the upstream is answering, then the same
/// payment again: it is served and settled once, then refused as a replay — never stuck.
async fn a_payment_whose_client_went_away_can_be_presented_again(backend: Backend) {
    // The first answer takes longer than the client waits.
    let upstream = Upstream::slow(Duration::from_secs(60), 1).await;
    let env = Env::with(paywalled(backend, &upstream)).await;
    let before = ledger(&env).await;
    let header = payment(&env);

    let address = env.base.trim_start_matches("http://").to_owned();
    let mut client = tokio::net::TcpStream::connect(&address).await.unwrap();
    client
        .write_all(
            format!(
                "GET /premium/quote HTTP/1.1\r\nHost: {address}\r\nX-PAYMENT: {header}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while upstream.calls_to("/premium/") == 0 {
        assert!(
            Instant::now() < deadline,
            "the paid request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);

    // Presented again: at first perhaps still held by the request being torn down, then served.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = raw_request(
            &env.base,
            "GET",
            "/premium/quote",
            &[("X-PAYMENT", &header)],
            b"",
        )
        .await;
        if !is_replay(&answer) {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the payment stayed claimed after its client went away: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.header("x-payment-response").is_some(), "{answer:?}");
    assert_eq!(upstream.calls_to("/premium/"), 2);
    assert_eq!(ledger(&env).await, one_sale_after(before), "settled once");

    // Once settled, the same payment is a replay, and reaches nothing.
    let replay = raw_request(
        &env.base,
        "GET",
        "/premium/quote",
        &[("X-PAYMENT", &header)],
        b"",
    )
    .await;
    assert!(is_replay(&replay), "{replay:?}");
    assert_eq!(upstream.calls_to("/premium/"), 2);
    assert_eq!(ledger(&env).await, one_sale_after(before), "settled once");
}

/// A paid request whose client goes away while its payment settles: the settlement is not
/// cut short — it is sent once, the sale is recorded — and the payment is then a replay.
async fn a_client_that_leaves_while_its_payment_settles_is_charged_once(backend: Backend) {
    let upstream = Upstream::start().await;
    // Blocks every two seconds: the settlement waits for its receipt.
    let env = Env::with(paywalled(backend, &upstream).block_time(2)).await;
    let before = ledger(&env).await;
    let header = payment(&env);

    let address = env.base.trim_start_matches("http://").to_owned();
    let mut client = tokio::net::TcpStream::connect(&address).await.unwrap();
    client
        .write_all(
            format!(
                "GET /premium/quote HTTP/1.1\r\nHost: {address}\r\nX-PAYMENT: {header}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while upstream.calls_to("/premium/") == 0 {
        assert!(
            Instant::now() < deadline,
            "the paid request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The upstream answered; the client leaves once the settlement waits for its block.
    while env
        .chain
        .get_transaction_count(env.signer.address())
        .pending()
        .await
        .unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "the settlement was never sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(client);

    let deadline = Instant::now() + Duration::from_secs(15);
    while ledger(&env).await != one_sale_after(before) || env.orders().await.len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the settlement or the sale's record was cut short: {:?}, {} orders",
            ledger(&env).await,
            env.orders().await.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let replay = raw_request(
        &env.base,
        "GET",
        "/premium/quote",
        &[("X-PAYMENT", &header)],
        b"",
    )
    .await;
    assert!(is_replay(&replay), "{replay:?}");
    assert_eq!(upstream.calls_to("/premium/"), 1);
    assert_eq!(ledger(&env).await, one_sale_after(before), "charged once");
}

/// A second Coffer replica over the env's database, with the same chain, signer and paywall;
/// its base URL.
async fn second_replica(env: &Env, upstream: &Upstream) -> String {
    let store = env.db.reopen().await.unwrap();
    let settle = SettleOptions {
        receipt_timeout: Duration::from_secs(5),
        ..SettleOptions::default()
    };
    let (base, _) = kit::serve(|base| {
        let state = AppState::new(store, (*env.state.gateway.chains).clone(), base)
            .unwrap()
            .with_settlement(vec![env.signer.clone()], settle);
        with_paywall(state, &upstream.url)
    })
    .await;
    base
}

async fn one_payment_sent_to_two_replicas_at_once_is_used_once(backend: Backend) {
    // Every answer takes a second, so the two requests overlap.
    let upstream = Upstream::slow(Duration::from_secs(1), u64::MAX).await;
    let env = Env::with(paywalled(backend, &upstream)).await;
    let other = second_replica(&env, &upstream).await;
    let before = ledger(&env).await;
    let header = payment(&env);

    let headers = [("X-PAYMENT", header.as_str())];
    let (first, second) = tokio::join!(
        raw_request(&env.base, "GET", "/premium/quote", &headers, b""),
        raw_request(&other, "GET", "/premium/quote", &headers, b""),
    );
    let mut statuses = [first.status, second.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 402], "{first:?} {second:?}");
    let refused = if first.status == 402 { &first } else { &second };
    assert!(is_replay(refused), "{refused:?}");
    assert_eq!(
        upstream.calls_to("/premium/"),
        1,
        "the upstream was called once"
    );
    assert_eq!(ledger(&env).await, one_sale_after(before), "broadcast once");

    // Afterwards it is a replay on either replica.
    for base in [&env.base, &other] {
        let replay = raw_request(base, "GET", "/premium/quote", &headers, b"").await;
        assert!(is_replay(&replay), "{replay:?}");
    }
    assert_eq!(upstream.calls_to("/premium/"), 1);
    assert_eq!(ledger(&env).await, one_sale_after(before));
}

/// The body of a 402 challenge names the canonical resource, never the raw path.
#[tokio::test]
async fn the_challenge_names_the_canonical_resource() {
    let upstream = Upstream::start().await;
    let env = Env::with(paywalled(Backend::Sqlite, &upstream)).await;
    let answer = raw_request(&env.base, "GET", "/premium/a/../%71uote", &[], b"").await;
    assert_eq!(answer.status, 402, "{answer:?}");
    assert_eq!(
        answer.body["accepts"][0]["resource"],
        Value::String(format!("{}/premium/quote", env.base))
    );
    assert!(upstream.seen().is_empty());
}

coffer_store::on_both_databases!(
    backend: [
        a_payment_whose_client_went_away_can_be_presented_again,
        one_payment_sent_to_two_replicas_at_once_is_used_once,
        a_client_that_leaves_while_its_payment_settles_is_charged_once,
    ];
);
