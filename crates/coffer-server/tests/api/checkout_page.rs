//! The hosted checkout page in a real browser: Coffer and anvil run here, headless Chromium
//! (Debian's `/usr/bin/chromium`, driven by playwright-core from `.tools/`) opens the page of
//! a GatePay checkout order, checks the amount and the QR code, and watches the test pay on
//! anvil: part of it first — the page then asks only for the rest, in its headline and its QR
//! code — then the rest: the page moves to "confirming (1 of 2)" with no way left to pay, then
//! "paid", then follows `returnUrl`; an unknown order's link shows a "not found" page.
//! Screenshots land in `target/screenshots/checkout-page/`.
//!
//! Needs `scripts/install-tools.sh` (anvil, playwright-core and Chromium).

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use coffer_gateway::workers::dispatcher::Dispatcher;
use coffer_gateway::workers::watcher::Watcher;
use coffer_store::testing::Backend;
use serde_json::json;

use crate::kit::{CHAIN_ID, Env, Inbox, Options, repo_root};

#[tokio::test]
async fn the_checkout_page_shows_the_qr_and_amount_then_paid_and_redirects() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is missing at {chromium}: run scripts/install-tools.sh"
    );
    let playwright = repo_root().join(".tools/node_modules/playwright-core");
    assert!(
        playwright.exists(),
        "playwright-core is missing: run scripts/install-tools.sh"
    );
    let shots = repo_root().join("target/screenshots/checkout-page");
    std::fs::create_dir_all(&shots).unwrap();

    // The shop serves the page the customer returns to beside Coffer; its endpoint is local:
    // loopback is allowed, as under `coffer dev`.
    let (_notifications, notify_url) = Inbox::start().await;
    let thanks = axum::Router::new().route(
        "/thanks",
        axum::routing::get(|| async { axum::response::Html("<h1>Thanks for your order</h1>") }),
    );
    let env = Env::with(
        Options::on(Backend::Sqlite)
            .confirmations(2)
            .local_endpoints()
            .merchant_webhook(&notify_url)
            .routes(thanks),
    )
    .await;
    env.deposit_wallet(&env.merchant.id).await;
    let client = env.gatepay_client(&env.merchant.id).await;
    let base = &env.base;

    let return_url = format!("{base}/thanks");
    let body = json!({
        "merchantTradeNo": "browser-1",
        "env": {"terminalType": "WAP"},
        "goods": {"goodsName": "Flat white"},
        "fullCurrType": "USDC_BASESEPOLIA",
        "orderAmount": "4.2",
        "returnUrl": return_url,
        "cancelUrl": format!("{base}/cancelled"),
    })
    .to_string();
    let (_, answer) = env.gatepay(&client, "/v1/pay/checkout/order", &body).await;
    assert_eq!(answer["status"], "SUCCESS", "{answer}");
    let location = answer["data"]["location"].as_str().unwrap().to_owned();
    let deposit = answer["data"]["chain"]["address"]
        .as_str()
        .unwrap()
        .to_owned();

    // The watcher and the dispatcher run as in `coffer serve`.
    let mut watcher = Watcher::new(&env.state.gateway, CHAIN_ID).expect("watcher");
    let dispatcher = Dispatcher::new(&env.state.gateway);
    let workers = tokio::spawn(async move {
        loop {
            let _ = watcher.step().await;
            let _ = dispatcher.dispatch_due().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let script = repo_root().join("crates/coffer-server/tests/browser/checkout_page.cjs");
    let mut browser = std::process::Command::new("node")
        .arg(&script)
        .arg(&location)
        .arg("4.20 USDC")
        .arg("3.00 USDC")
        .arg(&return_url)
        .arg(&shots)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let stdout = browser.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let run = async {
        while let Some(line) = rx.recv().await {
            match line.as_str() {
                "READY" => {
                    // Part of it first, from a funded test account.
                    env.pay(&deposit, 1_200_000).await;
                }
                // The rest: one block, the page shows 1 of 2.
                "PARTIAL" => env.pay(&deposit, 3_000_000).await,
                "CONFIRMING" => env.mine(1).await,
                _ => {}
            }
            seen.push(line);
        }
    };
    let finished = tokio::time::timeout(Duration::from_secs(180), run).await;
    if finished.is_err() {
        let _ = browser.kill();
    }
    let status = browser.wait().unwrap();
    workers.abort();
    assert!(
        finished.is_ok(),
        "the browser script did not finish in time; saw {seen:?}"
    );
    assert!(status.success(), "the browser script failed; saw {seen:?}");
    assert_eq!(seen, ["READY", "PARTIAL", "CONFIRMING", "PAID", "DONE"]);
    for shot in [
        "00-waiting-zh.png",
        "01-waiting.png",
        "02-partial.png",
        "03-confirming.png",
        "04-paid.png",
        "05-returned.png",
        "06-not-found.png",
    ] {
        assert!(shots.join(shot).is_file(), "screenshot {shot} missing");
    }
}
