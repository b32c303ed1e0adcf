//! Attack 4: SSRF through webhook and callback URLs. Anyone with an API key names a URL on
//! Coffer's own network (`http://127.0.0.1:<port>`, `169.254.169.254`, `10.x`, `[::1]`, odd
//! spellings of these, or a host name that resolves there, perhaps only after it was checked)
//! and reads the delivery log — status code, error, duration — as a port scanner, redelivering
//! as often as they like.
//!
//! Each test stands up real listeners where the attacker aims and counts the connections they
//! receive: a refused URL must be refused when it is set (400 naming the field, in each API
//! family's own envelope, creating nothing) and again when a delivery would go out (zero
//! connections, a log that says only "refused by the outbound policy"), and redelivery is
//! limited.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use coffer_gateway::merchants::MerchantError;
use coffer_gateway::outbound::{OutboundPolicy, StaticResolver};
use coffer_gateway::workers::watcher::{StepReport, Watcher};
use coffer_store::OrderUpdate;
use coffer_store::testing::Backend;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::kit::{Env, GatePayClient, Options};

/// The log entry of an attempt the policy refused.
const REFUSED: &str = "refused by the outbound policy";

/// A real TCP listener where an attacker aims: counts every connection it accepts and answers
/// each request `200` with GatePay's acknowledgement.
struct Listener {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    async fn bind(address: SocketAddr) -> std::io::Result<Listener> {
        let socket = TcpListener::bind(address).await?;
        let address = socket.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (counted, logged) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = socket.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let logged = logged.clone();
                tokio::spawn(async move {
                    let request = read_request(&mut stream).await;
                    logged.lock().unwrap().push(request);
                    let body = r#"{"returnCode":"SUCCESS","returnMessage":""}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Ok(Listener {
            address,
            connections,
            requests,
        })
    }

    async fn on(ip: IpAddr) -> Listener {
        Listener::bind(SocketAddr::new(ip, 0)).await.unwrap()
    }

    fn port(&self) -> u16 {
        self.address.port()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads a request's head and its `content-length` body.
async fn read_request(stream: &mut tokio::net::TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(read) = stream.read(&mut chunk).await {
        if read == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Listeners on several loopback addresses, all on one port (so one URL port reaches any of
/// them, depending on what its name resolves to).
async fn listeners_on_one_port(ips: &[Ipv4Addr]) -> Vec<Listener> {
    'again: loop {
        let first = Listener::on(IpAddr::V4(ips[0])).await;
        let mut all = vec![first];
        for ip in &ips[1..] {
            match Listener::bind(SocketAddr::new(IpAddr::V4(*ip), all[0].port())).await {
                Ok(listener) => all.push(listener),
                Err(_) => continue 'again,
            }
        }
        return all;
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// A public address (example.com's); nothing here ever connects to it.
const PUBLIC: IpAddr = IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34));

/// The environment with `policy` in force.
async fn env_with(backend: Backend, policy: OutboundPolicy) -> Env {
    let options = Options::on(backend).configure(move |state| state.with_outbound_policy(policy));
    let env = Env::with(options).await;
    env.deposit_wallet(&env.merchant.id).await;
    env
}

fn order_body(nonce: i64, webhook_url: Option<&str>) -> Value {
    let mut body = json!({
        "amount": "1.00",
        "currency": "USDC",
        "blockchain": "base-sepolia",
        "order_info": "{\"product\": \"Plan\"}",
        "nonce": nonce,
    });
    if let Some(url) = webhook_url {
        body["webhook_url"] = json!(url);
    }
    body
}

/// `POST /api/payment-orders/` with `key`.
async fn create_order(env: &Env, key: &str, body: &Value) -> (u16, Value) {
    env.post(
        "/api/payment-orders/",
        &[("Authorization", &format!("Bearer {key}"))],
        body,
    )
    .await
}

/// A signed GatePay request.
async fn gatepay_post(
    env: &Env,
    credential: &GatePayClient,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    env.gatepay(credential, path, &body.to_string()).await
}

fn checkout_body(trade_no: &str, callback_url: &str) -> Value {
    json!({
        "merchantTradeNo": trade_no,
        "env": {"terminalType": "WEB"},
        "merchantUserId": 7,
        "goods": {"goodsType": "02", "goodsName": "Plan", "goodsDetail": "one month"},
        "fullCurrType": "USDC_BASESEPOLIA",
        "orderAmount": "1",
        "callbackUrl": callback_url,
    })
}

/// Creates a GatePay order (with `callback_url`, else the merchant's endpoint is notified) and
/// closes it, which notifies `PAY_CLOSE`; returns the order's id.
async fn closed_checkout(
    env: &Env,
    credential: &GatePayClient,
    trade_no: &str,
    callback_url: Option<&str>,
) -> String {
    let mut body = checkout_body(trade_no, callback_url.unwrap_or_default());
    if callback_url.is_none() {
        body.as_object_mut().unwrap().remove("callbackUrl");
    }
    let (status, answer) = gatepay_post(env, credential, "/v1/pay/checkout/order", &body).await;
    assert_eq!(
        (status, &answer["code"]),
        (200, &json!("000000")),
        "{answer}"
    );
    let (status, answer) = gatepay_post(
        env,
        credential,
        "/v1/pay/order/close",
        &json!({"merchantTradeNo": trade_no}),
    )
    .await;
    assert_eq!(
        (status, &answer["data"]["result"]),
        (200, &json!("SUCCESS")),
        "{answer}"
    );
    env.orders()
        .await
        .last()
        .map(|order| order.order_id.clone())
        .unwrap()
}

/// Pays an order its full amount from the funded payer and lets the watcher see it (and the
/// confirmation), which writes the order's delivered events.
async fn pay_and_watch(env: &Env, watcher: &mut Watcher, order: &Value) {
    env.pay(
        order["data"]["receiving_address"].as_str().unwrap(),
        1_000_000,
    )
    .await;
    while watcher.step().await.unwrap() != StepReport::Idle {}
}

/// Every delivery of every event of an order, with the event's type, as the API shows them to
/// `key`.
async fn deliveries_of(env: &Env, key: &str, order_id: &str) -> Vec<(String, Value)> {
    let auth = format!("Bearer {key}");
    let headers = [("Authorization", auth.as_str())];
    let (status, events) = env
        .get(&format!("/api/events/?order_id={order_id}"), &headers)
        .await;
    assert_eq!(status, 200, "{events}");
    let mut all = Vec::new();
    for event in events["data"].as_array().unwrap() {
        let event_id = event["id"].as_str().unwrap();
        let (status, deliveries) = env
            .get(&format!("/api/events/{event_id}/deliveries/"), &headers)
            .await;
        assert_eq!(status, 200, "{deliveries}");
        for delivery in deliveries["data"].as_array().unwrap() {
            all.push((event["type"].as_str().unwrap().to_owned(), delivery.clone()));
        }
    }
    all
}

/// Asserts that an order's deliveries were all attempted and all refused by the policy, and
/// that the log says nothing more: no status code, no duration, no other error.
async fn assert_only_refused(env: &Env, key: &str, order_id: &str, what: &str) {
    let deliveries = deliveries_of(env, key, order_id).await;
    assert!(!deliveries.is_empty(), "{what}: no delivery");
    for (event_type, delivery) in &deliveries {
        let context = format!("{what}: {event_type}: {delivery}");
        assert_eq!(delivery["status"], "pending", "{context}");
        assert_eq!(delivery["last_error"], REFUSED, "{context}");
        assert_eq!(delivery["last_status_code"], Value::Null, "{context}");
        let log = delivery["log"].as_array().unwrap();
        assert!(!log.is_empty(), "{context}: never attempted");
        for attempt in log {
            assert_eq!(
                (
                    &attempt["status_code"],
                    &attempt["error"],
                    &attempt["duration_ms"]
                ),
                (&Value::Null, &json!(REFUSED), &json!(0)),
                "{context}"
            );
        }
    }
}

/// Asserts that each of an order's deliveries reached its endpoint.
async fn assert_delivered(env: &Env, key: &str, order_id: &str, what: &str) {
    let deliveries = deliveries_of(env, key, order_id).await;
    assert!(!deliveries.is_empty(), "{what}: no delivery");
    for (event_type, delivery) in &deliveries {
        let context = format!("{what}: {event_type}: {delivery}");
        assert_eq!(delivery["status"], "delivered", "{context}");
        assert_eq!(delivery["log"][0]["status_code"], 200, "{context}");
    }
}

/// Every URL form that reaches Coffer's own network, aimed at live listeners.
fn private_urls(v4_port: u16, v6_port: u16) -> Vec<String> {
    vec![
        format!("http://127.0.0.1:{v4_port}/hook"),
        format!("http://[::1]:{v6_port}/hook"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://172.16.0.1/".to_owned(),
        "http://192.168.1.1/".to_owned(),
        format!("http://[::ffff:127.0.0.1]:{v4_port}/hook"),
        format!("http://2130706433:{v4_port}/hook"),
        format!("http://0x7f.1:{v4_port}/hook"),
        format!("http://127.1:{v4_port}/hook"),
        format!("http://localhost:{v4_port}/hook"),
        format!("http://api.localhost:{v4_port}/hook"),
        "http://100.64.0.1/".to_owned(),
        "http://[fd00::1]/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "http://0.0.0.0/".to_owned(),
        format!("http://[64:ff9b::7f00:1]:{v4_port}/"),
        format!("http://loopback.attacker.example:{v4_port}/hook"),
        "http://metadata.attacker.example/latest/meta-data".to_owned(),
        format!("http://mixed.attacker.example:{v4_port}/hook"),
    ]
}

/// Names the attacker controls, resolving into Coffer's network (one of them only partly).
fn attacker_dns() -> StaticResolver {
    StaticResolver::new()
        .with("loopback.attacker.example", &[v4(127, 0, 0, 1)])
        .with("metadata.attacker.example", &[v4(169, 254, 169, 254)])
        .with("mixed.attacker.example", &[PUBLIC, v4(127, 0, 0, 1)])
        .with("shop.example", &[PUBLIC])
}

async fn private_urls_are_refused_when_set_in_every_family(backend: Backend) {
    let policy = OutboundPolicy::strict().with_resolver(Arc::new(attacker_dns()));
    let env = env_with(backend, policy).await;
    let target = Listener::on(v4(127, 0, 0, 1)).await;
    let target6 = Listener::on(IpAddr::V6(Ipv6Addr::LOCALHOST)).await;
    let credential = env.gatepay_client(&env.merchant.id).await;
    let merchants_before = env.state.gateway.merchants.list().await.unwrap().len();

    for (n, url) in private_urls(target.port(), target6.port())
        .iter()
        .enumerate()
    {
        // The merchant endpoint, through the service the CLI uses.
        match env
            .state
            .gateway
            .merchants
            .create("Scanner", Some(url))
            .await
        {
            Err(MerchantError::UrlNotAllowed { field, refusal }) => {
                assert_eq!(field, "webhook_url", "{url}");
                assert!(refusal.is_forbidden_destination(), "{url}: {refusal}");
            }
            other => panic!("{url}: the merchant endpoint was accepted: {other:?}"),
        }

        // A CryptoPay order's webhook_url.
        let nonce = i64::try_from(n).unwrap() + 1;
        let (status, answer) =
            create_order(&env, &env.api_key, &order_body(nonce, Some(url))).await;
        assert_eq!(status, 400, "{url}: {answer}");
        assert_eq!(answer["success"], false, "{url}: {answer}");
        assert_eq!(
            answer["error"]["code"], "URL_NOT_ALLOWED",
            "{url}: {answer}"
        );
        assert_eq!(answer["error"]["field"], "webhook_url", "{url}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("webhook_url: "),
            "{url}: {answer}"
        );

        // A GatePay order's callbackUrl, with a trade number used again below.
        let (status, answer) = gatepay_post(
            &env,
            &credential,
            "/v1/pay/checkout/order",
            &checkout_body("T-1", url),
        )
        .await;
        assert_eq!(status, 400, "{url}: {answer}");
        assert_eq!(
            (&answer["status"], &answer["code"], &answer["label"]),
            (
                &json!("FAIL"),
                &json!("400624"),
                &json!("INVALID_CALLBACK_URL")
            ),
            "{url}: {answer}"
        );
        assert!(
            answer["errorMessage"]
                .as_str()
                .unwrap()
                .starts_with("callbackUrl: "),
            "{url}: {answer}"
        );
    }
    assert!(env.orders().await.is_empty(), "no order was created");
    assert_eq!(
        env.state.gateway.merchants.list().await.unwrap().len(),
        merchants_before,
        "no merchant was created"
    );

    // The same requests with a public endpoint succeed: they were refused for their URL alone,
    // and nothing (not a nonce, not the GatePay trade number) was kept from the refused ones.
    let public = "https://shop.example/hook";
    env.state
        .gateway
        .merchants
        .create("Shop", Some(public))
        .await
        .unwrap();
    let (status, answer) = create_order(&env, &env.api_key, &order_body(1, Some(public))).await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = gatepay_post(
        &env,
        &credential,
        "/v1/pay/checkout/order",
        &checkout_body("T-1", public),
    )
    .await;
    assert_eq!(
        (status, &answer["code"]),
        (200, &json!("000000")),
        "{answer}"
    );
    assert_eq!(env.orders().await.len(), 2);
    assert_eq!((target.connections(), target6.connections()), (0, 0));
}

async fn a_name_that_resolves_public_then_private_is_never_connected_to(backend: Backend) {
    let target = Listener::on(v4(127, 0, 0, 1)).await;
    let (native, checkout) = ("rebind.attacker.example", "rebind-gp.attacker.example");
    let rebinding = || vec![vec![PUBLIC], vec![v4(127, 0, 0, 1)]];
    let resolver = Arc::new(
        StaticResolver::new()
            .with_answers(native, rebinding())
            .with_answers(checkout, rebinding()),
    );
    let policy = OutboundPolicy::strict().with_resolver(resolver.clone());
    let env = env_with(backend, policy).await;
    let mut watcher = env.watcher().await;

    // A CryptoPay order: public when its webhook_url is set, loopback when it is called.
    let url = format!("http://{native}:{}/hook", target.port());
    let (status, order) = create_order(&env, &env.api_key, &order_body(1, Some(&url))).await;
    assert_eq!(status, 201, "public when checked: {order}");
    assert_eq!(resolver.lookups(native), 1);
    pay_and_watch(&env, &mut watcher, &order).await;
    let attempts = env.deliver().await;
    assert!(attempts >= 1, "the payment's events are delivered");
    assert_eq!(
        resolver.lookups(native),
        1 + attempts,
        "each attempt resolved the name once"
    );

    // A GatePay order's callbackUrl, the same way.
    let credential = env.gatepay_client(&env.merchant.id).await;
    let callback = format!("http://{checkout}:{}/notify", target.port());
    let checkout_order = closed_checkout(&env, &credential, "T-rebind", Some(&callback)).await;
    assert_eq!(env.deliver().await, 1);
    assert_eq!(resolver.lookups(checkout), 2);

    assert_eq!(
        target.connections(),
        0,
        "nothing reached the private address"
    );
    let order_id = order["data"]["order_id"].as_str().unwrap();
    assert_only_refused(&env, &env.api_key, order_id, &url).await;
    assert_only_refused(&env, &env.api_key, &checkout_order, &callback).await;
}

async fn only_the_address_that_was_checked_is_connected_to(backend: Backend) {
    // 127.0.0.2 stands for a public address (the operator allows it); 127.0.0.1 is the
    // attacker's target. Both listen on one port.
    let listeners =
        listeners_on_one_port(&[Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 1)]).await;
    let (allowed, target) = (&listeners[0], &listeners[1]);
    let allowed_ip = v4(127, 0, 0, 2);
    let (flip, mixed) = ("flip.attacker.example", "mixed.attacker.example");
    let resolver = Arc::new(
        StaticResolver::new()
            // Checked when set; checked when sending; anything after that is the target.
            .with_answers(
                flip,
                vec![vec![allowed_ip], vec![allowed_ip], vec![v4(127, 0, 0, 1)]],
            )
            // Allowed when set; one allowed and one refused address when sending.
            .with_answers(
                mixed,
                vec![vec![allowed_ip], vec![allowed_ip, v4(127, 0, 0, 1)]],
            ),
    );
    let policy = OutboundPolicy::strict()
        .with_allow_lists(&[], &["127.0.0.2/32".to_owned()])
        .unwrap()
        .with_resolver(resolver.clone());
    let env = env_with(backend, policy).await;
    let credential = env.gatepay_client(&env.merchant.id).await;
    let port = allowed.port();

    let flip_url = format!("http://{flip}:{port}/notify");
    let flipped = closed_checkout(&env, &credential, "T-flip", Some(&flip_url)).await;
    assert_eq!(env.deliver().await, 1);
    assert_eq!(
        (allowed.connections(), target.connections()),
        (1, 0),
        "the request went to the address that was checked, and only there"
    );
    assert_eq!(resolver.lookups(flip), 2, "one lookup to set, one to send");
    assert!(allowed.requests()[0].contains("PAY_CLOSE"));
    assert_delivered(&env, &env.api_key, &flipped, &flip_url).await;

    let mixed_url = format!("http://{mixed}:{port}/notify");
    let mixed_order = closed_checkout(&env, &credential, "T-mixed", Some(&mixed_url)).await;
    assert_eq!(env.deliver().await, 1);
    assert_eq!(
        (allowed.connections(), target.connections()),
        (1, 0),
        "a name with any refused address is not connected to at all"
    );
    assert_only_refused(&env, &env.api_key, &mixed_order, &mixed_url).await;
}

/// Writes an event of `order_id` with a delivery to `url` straight into the store, past every
/// check, as a URL stored before the checks existed (or by any other path) would be.
async fn stored_delivery(env: &Env, order_id: &str, url: &str) {
    let order = env.state.gateway.store.order(order_id).await.unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let event = coffer_gateway::events::order_event(
        &env.merchant,
        order_id,
        Some(url),
        "payment_order.updated",
        json!({"order_id": order_id}),
        now_ms,
        true,
    );
    env.state
        .gateway
        .store
        .update_orders(&[OrderUpdate {
            order_id: order_id.to_owned(),
            expected_version: order.version,
            status: order.status,
            sub_status: order.sub_status,
            amount_paid: order.amount_paid,
            confirmed_at_ms: order.confirmed_at_ms,
            closed: order.closed,
            updated_at_ms: now_ms,
            events: vec![event],
        }])
        .await
        .unwrap();
}

async fn a_stored_url_that_skipped_the_checks_is_refused_at_delivery(backend: Backend) {
    let env = env_with(
        backend,
        OutboundPolicy::strict().with_resolver(Arc::new(attacker_dns())),
    )
    .await;
    let target = Listener::on(v4(127, 0, 0, 1)).await;
    let target6 = Listener::on(IpAddr::V6(Ipv6Addr::LOCALHOST)).await;
    let closed_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut urls = private_urls(target.port(), target6.port());
    urls.extend([
        // A closed port: its log must read the same as the open one's (no port oracle).
        format!("http://127.0.0.1:{closed_port}/hook"),
        // Malformed or with credentials, which the checks would have refused too.
        format!("http://user:secret@127.0.0.1:{}/hook", target.port()),
        format!("ftp://127.0.0.1:{}/hook", target.port()),
    ]);
    // The merchant's endpoint, too, written past the checks.
    env.state
        .gateway
        .store
        .set_merchant_webhook_url(&env.merchant.id, Some(&urls[0]))
        .await
        .unwrap();
    let mut orders = Vec::new();
    for (n, url) in urls.iter().enumerate() {
        let nonce = i64::try_from(n).unwrap();
        let (status, order) = create_order(&env, &env.api_key, &order_body(nonce, None)).await;
        assert_eq!(status, 201, "{order}");
        let order_id = order["data"]["order_id"].as_str().unwrap().to_owned();
        stored_delivery(&env, &order_id, url).await;
        orders.push((url, order_id));
    }
    // A GatePay notification to the stored merchant endpoint.
    let credential = env.gatepay_client(&env.merchant.id).await;
    let checkout_order = closed_checkout(&env, &credential, "T-stored", None).await;

    assert_eq!(env.deliver().await, urls.len() + 1);
    assert_eq!(
        (target.connections(), target6.connections()),
        (0, 0),
        "nothing reached this machine"
    );
    for (url, order_id) in &orders {
        assert_only_refused(&env, &env.api_key, order_id, url).await;
    }
    assert_only_refused(&env, &env.api_key, &checkout_order, &urls[0]).await;
}

async fn redelivery_is_limited_and_sends_nothing_beyond_the_limit(backend: Backend) {
    let env = env_with(backend, OutboundPolicy::allowing_loopback()).await;
    let endpoint = Listener::on(v4(127, 0, 0, 1)).await;
    let credential = env.gatepay_client(&env.merchant.id).await;
    let url = format!("http://127.0.0.1:{}/notify", endpoint.port());
    let order_id = closed_checkout(&env, &credential, "T-redeliver", Some(&url)).await;
    assert_eq!(env.deliver().await, 1);
    assert_eq!(endpoint.connections(), 1);
    let (event_type, delivery) = deliveries_of(&env, &env.api_key, &order_id).await.remove(0);
    assert_eq!(event_type, "gatepay.pay_close");
    let path = format!(
        "/api/events/{}/redeliver/",
        delivery["event_id"].as_str().unwrap()
    );
    let auth = env.auth();
    let headers = [(auth.0, auth.1.as_str())];

    // A burst: one is scheduled, the others find it in flight.
    let empty = json!({});
    let burst =
        futures_util::future::join_all((0..10).map(|_| env.post(&path, &headers, &empty))).await;
    let accepted = burst.iter().filter(|(status, _)| *status == 202).count();
    assert_eq!(accepted, 1, "{burst:?}");
    for (status, answer) in burst.iter().filter(|(status, _)| *status != 202) {
        assert_eq!(*status, 429, "{answer}");
        assert_eq!(
            (&answer["success"], &answer["error"]["code"]),
            (&json!(false), &json!("REDELIVERY_LIMITED")),
            "{answer}"
        );
    }
    assert_eq!(env.deliver().await, 1);
    assert_eq!(endpoint.connections(), 2);

    for sent in 3..=6 {
        let (status, answer) = env.post(&path, &headers, &empty).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(env.deliver().await, 1);
        assert_eq!(endpoint.connections(), sent);
    }

    // Five redeliveries in the hour: more are refused, and nothing more is sent.
    for _ in 0..3 {
        let (status, answer) = env.post(&path, &headers, &empty).await;
        assert_eq!(status, 429, "{answer}");
        assert_eq!(answer["error"]["code"], "REDELIVERY_LIMITED", "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("5 times in the last hour"),
            "{answer}"
        );
        assert_eq!(env.deliver().await, 0);
    }
    assert_eq!(endpoint.connections(), 6);

    // An event recorded but never sent (the order's creation) is not sent by redelivery either.
    let created = env
        .state
        .gateway
        .store
        .events(&env.merchant.id, Some(&order_id), 100)
        .await
        .unwrap()
        .into_iter()
        .find(|event| event.event_type == "payment_order.created")
        .expect("the creation event");
    let (status, answer) = env
        .post(
            &format!("/api/events/{}/redeliver/", created.event_id),
            &headers,
            &empty,
        )
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("NOT_DELIVERABLE")),
        "{answer}"
    );
    assert_eq!(env.deliver().await, 0);
    assert_eq!(endpoint.connections(), 6);
    let deliveries = deliveries_of(&env, &env.api_key, &order_id).await;
    assert_eq!(
        deliveries.len(),
        6,
        "the first delivery and five redeliveries"
    );
    assert!(deliveries.iter().all(|(_, d)| d["status"] == "delivered"));
}

async fn the_coffer_dev_policy_still_delivers_locally(backend: Backend) {
    let env = env_with(backend, OutboundPolicy::allowing_loopback()).await;
    let endpoint = Listener::on(v4(127, 0, 0, 1)).await;
    let mut watcher = env.watcher().await;
    let url = format!("http://127.0.0.1:{}/hook", endpoint.port());
    let (status, order) = create_order(&env, &env.api_key, &order_body(1, Some(&url))).await;
    assert_eq!(status, 201, "{url}: {order}");
    pay_and_watch(&env, &mut watcher, &order).await;
    let sent = env.deliver().await;
    assert!(sent >= 1);
    assert_eq!(endpoint.connections(), sent);
    let order_id = order["data"]["order_id"].as_str().unwrap();
    assert_delivered(&env, &env.api_key, order_id, &url).await;

    let credential = env.gatepay_client(&env.merchant.id).await;
    let callback = format!("http://localhost:{}/notify", endpoint.port());
    let checkout = closed_checkout(&env, &credential, "T-local", Some(&callback)).await;
    assert_eq!(env.deliver().await, 1);
    assert_eq!(endpoint.connections(), sent + 1);
    assert_delivered(&env, &env.api_key, &checkout, &callback).await;

    // Loopback is all it allows.
    let (status, answer) = create_order(
        &env,
        &env.api_key,
        &order_body(9, Some("http://169.254.169.254/latest/meta-data")),
    )
    .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("URL_NOT_ALLOWED"))
    );
}

async fn an_allowed_network_or_host_admits_exactly_that_target(backend: Backend) {
    // Allowed: the network 127.0.0.2/32 and the host hooks.internal.example (which resolves to
    // 127.0.0.4). Their neighbours, 127.0.0.3 and other.internal.example (also 127.0.0.4), are
    // not.
    let listeners = listeners_on_one_port(&[
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
        Ipv4Addr::new(127, 0, 0, 4),
    ])
    .await;
    let (network, neighbour, host) = (&listeners[0], &listeners[1], &listeners[2]);
    let port = network.port();
    let resolver = StaticResolver::new()
        .with("hooks.internal.example", &[v4(127, 0, 0, 4)])
        .with("other.internal.example", &[v4(127, 0, 0, 4)]);
    let policy = OutboundPolicy::strict()
        .with_allow_lists(
            &["hooks.internal.example".to_owned()],
            &["127.0.0.2/32".to_owned()],
        )
        .unwrap()
        .with_resolver(Arc::new(resolver));
    let env = env_with(backend, policy).await;
    let credential = env.gatepay_client(&env.merchant.id).await;

    for (n, (url, listener)) in [
        (format!("http://127.0.0.2:{port}/notify"), network),
        (format!("http://hooks.internal.example:{port}/notify"), host),
    ]
    .into_iter()
    .enumerate()
    {
        let order_id = closed_checkout(&env, &credential, &format!("T-ok-{n}"), Some(&url)).await;
        assert_eq!(env.deliver().await, 1);
        assert_eq!(listener.connections(), 1, "{url}");
        assert_delivered(&env, &env.api_key, &order_id, &url).await;
    }
    for (n, url) in [
        format!("http://127.0.0.3:{port}/notify"),
        format!("http://other.internal.example:{port}/notify"),
        format!("http://127.0.0.1:{port}/notify"),
    ]
    .iter()
    .enumerate()
    {
        let nonce = i64::try_from(n).unwrap();
        let (status, answer) =
            create_order(&env, &env.api_key, &order_body(10 + nonce, Some(url))).await;
        assert_eq!(status, 400, "{url}: {answer}");
        assert_eq!(
            answer["error"]["code"], "URL_NOT_ALLOWED",
            "{url}: {answer}"
        );
        let (status, answer) = gatepay_post(
            &env,
            &credential,
            "/v1/pay/checkout/order",
            &checkout_body(&format!("T-no-{n}"), url),
        )
        .await;
        assert_eq!(
            (status, &answer["code"]),
            (400, &json!("400624")),
            "{url}: {answer}"
        );

        // Stored past the checks, it is refused when sent.
        let (status, order) = create_order(&env, &env.api_key, &order_body(20 + nonce, None)).await;
        assert_eq!(status, 201, "{order}");
        let order_id = order["data"]["order_id"].as_str().unwrap();
        stored_delivery(&env, order_id, url).await;
        assert_eq!(env.deliver().await, 1);
        assert_only_refused(&env, &env.api_key, order_id, url).await;
    }
    assert_eq!(
        (
            network.connections(),
            neighbour.connections(),
            host.connections()
        ),
        (1, 0, 1),
        "exactly the allowed targets were reached"
    );
}

coffer_store::on_both_databases!(
    private_urls_are_refused_when_set_in_every_family,
    a_name_that_resolves_public_then_private_is_never_connected_to,
    only_the_address_that_was_checked_is_connected_to,
    a_stored_url_that_skipped_the_checks_is_refused_at_delivery,
    redelivery_is_limited_and_sends_nothing_beyond_the_limit,
    the_coffer_dev_policy_still_delivers_locally,
    an_allowed_network_or_host_admits_exactly_that_target,
);
