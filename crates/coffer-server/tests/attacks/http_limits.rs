//! Attack 7: made-up HTTP methods and slow clients.
//!
//! Invented methods and random paths must not grow `/metrics`; a client that trickles its
//! headers is disconnected; a request slower than the request timeout is answered 408 (and a
//! paid one settles nothing); past the concurrency limit requests are shed with 503 and
//! `Retry-After`; bodies stay limited to 2 MB.

use std::time::{Duration, Instant};

use coffer_server::app::ConnectionLimits;
use coffer_store::testing::Backend;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Env, Options, parse_raw_response, raw_request};
use crate::paywall_paths::{Upstream, ledger, payment, paywalled, with_paywall};

/// The `coffer_http_requests_total` series in a `/metrics` text.
fn request_series(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|line| line.starts_with("coffer_http_requests_total{"))
        .collect()
}

async fn metrics_text(env: &Env) -> String {
    reqwest::get(format!("{}/metrics", env.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn invented_methods_and_unknown_paths_add_no_metrics_series() {
    let upstream = Upstream::start().await;
    let env = Env::with(paywalled(Backend::Sqlite, &upstream)).await;
    let client = reqwest::Client::new();
    for i in 0..200 {
        let method = reqwest::Method::from_bytes(format!("XFOO{i}").as_bytes()).unwrap();
        client
            .request(method, format!("{}/healthz", env.base))
            .send()
            .await
            .unwrap();
        let unknown = client
            .get(format!("{}/nowhere-{i}", env.base))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status().as_u16(), 404);
        let unpaid = client
            .get(format!("{}/premium/item-{i}", env.base))
            .send()
            .await
            .unwrap();
        assert_eq!(unpaid.status().as_u16(), 402);
    }
    let text = metrics_text(&env).await;
    let series = request_series(&text);
    assert!(
        series.len() <= 6,
        "{} series after 600 distinct requests:\n{}",
        series.len(),
        series.join("\n")
    );
    assert!(!text.contains("XFOO"), "{text}");
    assert!(!text.contains("nowhere-"), "{text}");
    assert!(!text.contains("item-"), "{text}");
    assert!(
        text.contains(
            r#"coffer_http_requests_total{method="other",route="/healthz",status="405"} 200"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"coffer_http_requests_total{method="GET",route="unmatched",status="404"} 200"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"coffer_http_requests_total{method="GET",route="/premium/*",status="402"} 200"#
        ),
        "{text}"
    );
    assert!(upstream.seen().is_empty());
}

/// The env's state served once more, with short connection limits; its base URL.
async fn serve_with_limits(env: &Env, limits: ConnectionLimits) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(coffer_server::app::serve_with(
        listener,
        coffer_server::router(env.state.clone()),
        limits,
        std::future::pending(),
    ));
    base
}

#[tokio::test]
async fn a_client_that_sends_headers_one_byte_a_second_is_disconnected() {
    let env = Env::new(Backend::Sqlite).await;
    let timeout = Duration::from_secs(2);
    let base = serve_with_limits(
        &env,
        ConnectionLimits {
            header_read_timeout: timeout,
            max_connections: 16,
        },
    )
    .await;
    let stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let reading = tokio::spawn(async move {
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer).await;
        (started.elapsed(), answer)
    });
    let headers = b"GET /healthz HTTP/1.1\r\nHost: coffer\r\nX-Slow: never-ending";
    let mut sent = 0;
    for byte in headers.iter().take(8) {
        if reading.is_finished() || writer.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (closed_after, answer) = tokio::time::timeout(Duration::from_secs(2), reading)
        .await
        .expect("the slow client is still connected")
        .unwrap();
    assert!(
        closed_after < timeout + Duration::from_secs(2),
        "disconnected after {closed_after:?}"
    );
    assert!(sent < 8, "the server kept reading for {sent} s");
    // Either a bare close or a 408, never an answer to the half-sent request.
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // A client that sends its request promptly is served.
    let healthy = raw_request(&base, "GET", "/healthz", &[], b"").await;
    assert_eq!(healthy.status, 200);
}

#[tokio::test]
async fn a_request_slower_than_the_request_timeout_is_answered_408_and_settles_nothing() {
    // The upstream's first answer takes longer than a request may.
    let upstream = Upstream::slow(Duration::from_secs(6), 1).await;
    let mut options = paywalled(Backend::Sqlite, &upstream);
    let url = upstream.url.clone();
    options.configure = Box::new(move |state| {
        let mut state = with_paywall(state, &url);
        state.limits.request_timeout = Duration::from_secs(2);
        state
    });
    let env = Env::with(options).await;
    let before = ledger(&env).await;
    let header = payment(&env);

    // A slow handler: the paid request waits on the upstream past the timeout.
    let started = Instant::now();
    let answer = raw_request(
        &env.base,
        "GET",
        "/premium/quote",
        &[("X-PAYMENT", &header)],
        b"",
    )
    .await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.body["success"], false, "{answer:?}");
    assert_eq!(
        answer.body["error"]["code"], "REQUEST_TIMEOUT",
        "{answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(ledger(&env).await, before, "nothing was settled");

    // The payment was released with the request: presented again, it is served and settled.
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
        if answer.status != 402 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        ledger(&env).await.signer_transactions,
        before.signer_transactions + 1
    );

    // A slow body: ten of the hundred bytes announced, then nothing.
    let address = env.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /api/payment-orders/ HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"amount\"",
                env.api_key
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("a slow body is answered")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1900));
    let answer = parse_raw_response(&answer);
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(
        answer.body["error"]["code"], "REQUEST_TIMEOUT",
        "{answer:?}"
    );
    assert!(
        env.orders().await.len() <= 1,
        "only the paid sale is an order"
    );
}

#[tokio::test]
async fn past_the_concurrency_limit_requests_are_shed_with_503_and_retry_after() {
    let mut options = Options::on(Backend::Sqlite);
    options.configure = Box::new(|mut state| {
        state.limits.max_concurrent_requests = 2;
        state
    });
    let env = Env::with(options).await;
    let address = env.base.trim_start_matches("http://").to_owned();

    // Two requests whose bodies never finish hold both places.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST /x402/settle HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
                     Content-Length: 100\r\n\r\n{{"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        held.push(stream);
    }
    let (name, value) = env.auth();
    let deadline = Instant::now() + Duration::from_secs(5);
    let shed = loop {
        let answer = raw_request(&env.base, "GET", "/api/merchant", &[(name, &value)], b"").await;
        if answer.status == 503 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shed.status, 503, "{shed:?}");
    assert_eq!(shed.header("retry-after"), Some("1"), "{shed:?}");
    assert_eq!(shed.body["success"], false);
    assert_eq!(shed.body["error"]["code"], "OVERLOADED", "{shed:?}");
    // Liveness is answered whatever the load.
    let health = raw_request(&env.base, "GET", "/healthz", &[], b"").await;
    assert_eq!(health.status, 200);

    // When the held requests go away, their places are free again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = raw_request(&env.base, "GET", "/api/merchant", &[(name, &value)], b"").await;
        if answer.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bodies_over_two_megabytes_are_answered_413() {
    let env = Env::new(Backend::Sqlite).await;
    let big = json!({"amount": "1", "padding": "x".repeat(3 * 1024 * 1024)}).to_string();
    let (name, value) = env.auth();
    let answer = reqwest::Client::new()
        .post(format!("{}/api/payment-orders/", env.base))
        .header(name, value)
        .header("Content-Type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 413);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE", "{body}");
    assert_eq!(body["error"]["field"], "body", "{body}");
    assert!(env.orders().await.is_empty());

    let answer = reqwest::Client::new()
        .post(format!("{}/x402/settle", env.base))
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 413);
    assert_eq!(env.signer_transactions().await, 0);
}
