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

use super::paywall_paths::{Upstream, ledger, payment, paywalled};
use crate::kit::{Env, Options, parse_raw_response, raw_request};

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
    let env = Env::with(Options::on(Backend::Sqlite).without_chain()).await;
    let timeout = Duration::from_secs(2);
    let base = serve_with_limits(
        &env,
        ConnectionLimits {
            header_read_timeout: timeout,
            max_connections: 16,
            max_connections_per_client: 16,
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
    let options = paywalled(Backend::Sqlite, &upstream).configure(|mut state| {
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
    // Two paid requests wait on a slow upstream: they hold both places.
    let upstream = Upstream::slow(Duration::from_secs(3), 2).await;
    let options = paywalled(Backend::Sqlite, &upstream).configure(|mut state| {
        state.limits.max_concurrent_requests = 2;
        state
    });
    let env = Env::with(options).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (base, header) = (env.base.clone(), payment(&env));
        held.push(tokio::spawn(async move {
            raw_request(
                &base,
                "GET",
                "/premium/quote",
                &[("X-PAYMENT", &header)],
                b"",
            )
            .await
        }));
    }
    // Both are at the upstream before anyone else asks.
    let deadline = Instant::now() + Duration::from_secs(3);
    while upstream.seen().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the paid requests reach the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (name, value) = env.auth();
    let deadline = Instant::now() + Duration::from_secs(3);
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

    // When the held requests are done, their places are free again.
    for request in held {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let answer = raw_request(&env.base, "GET", "/api/merchant", &[(name, &value)], b"").await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// Slow senders of request bodies hold their connections, never a place: the body is read
/// before the request takes one, within its own deadline, then 408.
#[tokio::test]
async fn slow_bodies_take_no_place_and_are_answered_408() {
    let options = Options::on(Backend::Sqlite).configure(|mut state| {
        state.limits.max_concurrent_requests = 2;
        state.limits.body_read_timeout = Duration::from_secs(2);
        state
    });
    let env = Env::with(options).await;
    let address = env.base.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..6 {
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
        slow.push(stream);
    }
    // Everyone else is served meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (name, value) = env.auth();
    let answer = raw_request(&env.base, "GET", "/api/merchant", &[(name, &value)], b"").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    // The slow senders get 408 at their deadline.
    for mut stream in slow {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("answered and closed")
            .unwrap();
        let answer = parse_raw_response(&answer);
        assert_eq!(answer.status, 408, "{answer:?}");
        assert_eq!(answer.body["error"]["code"], "REQUEST_TIMEOUT");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// One client cannot hold every connection: past its share, its connections are closed.
#[tokio::test]
async fn one_client_cannot_take_every_connection() {
    let env = Env::with(Options::on(Backend::Sqlite).without_chain()).await;
    let base = serve_with_limits(
        &env,
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 64,
            max_connections_per_client: 3,
        },
    )
    .await;
    let address = base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    // The fourth is closed at once, unanswered.
    let mut fourth = tokio::net::TcpStream::connect(&address).await.unwrap();
    let _ = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: coffer\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), fourth.read_to_end(&mut answer))
        .await
        .expect("closed promptly");
    assert!(
        read.is_err() || answer.is_empty(),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Its share back, the client is served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let healthy = raw_request(&base, "GET", "/healthz", &[], b"").await;
    assert_eq!(healthy.status, 200);
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
