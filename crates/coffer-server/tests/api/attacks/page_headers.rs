//! Attack 3, the browser's half: a page that lets injected script run, or lets itself be framed.
//!
//! Every HTML page Coffer serves — each route `/openapi.json` documents as `text/html`, and the
//! paywall's 402 page for browsers — answers with a Content-Security-Policy that runs no inline
//! script unless the policy names it by hash or nonce, forbids framing, and comes with
//! `X-Content-Type-Options: nosniff`, a `Referrer-Policy` and `X-Frame-Options`. The checkout
//! page's own inline script is one the policy names, so it keeps working.

use base64::Engine;
use coffer_server::paywall::PaywallRouteConfig;
use coffer_store::testing::Backend;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::kit::{Env, Options, paywall_route, with_paywall};

/// One answer's headers and body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn fetch(url: &str, browser: bool) -> Answer {
    let mut request = reqwest::Client::new().get(url);
    if browser {
        request = request
            .header("Accept", "text/html,application/xhtml+xml")
            .header("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)");
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

/// The sources of each directive of a policy.
fn directives(policy: &str) -> Vec<(String, Vec<String>)> {
    policy
        .split(';')
        .filter_map(|directive| {
            let mut words = directive.split_whitespace();
            let name = words.next()?.to_ascii_lowercase();
            Some((name, words.map(str::to_owned).collect()))
        })
        .collect()
}

/// The inline scripts of a page (not JSON data blocks).
fn inline_scripts(page: &str) -> Vec<String> {
    let mut scripts = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find("<script") {
        let tag_end = start + rest[start..].find('>').unwrap();
        let tag = &rest[start..tag_end];
        let close = tag_end + rest[tag_end..].find("</script>").unwrap();
        if !tag.contains("application/json") && !tag.contains("src=") {
            scripts.push(rest[tag_end + 1..close].to_owned());
        }
        rest = &rest[close + "</script>".len()..];
    }
    scripts
}

/// Asserts the headers of an HTML answer, and that every inline script it has is one its policy
/// names by hash.
fn assert_strict(what: &str, answer: &Answer) {
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        header("content-type").starts_with("text/html"),
        "{what}: not HTML"
    );
    let policy = header("content-security-policy");
    assert!(!policy.is_empty(), "{what}: no Content-Security-Policy");
    let directives = directives(&policy);
    let sources = |name: &str| {
        directives
            .iter()
            .find(|(directive, _)| directive == name)
            .map(|(_, sources)| sources.clone())
    };
    // Scripts follow script-src, else default-src; either way: nothing inline or remote
    // unless named by hash or nonce.
    let scripts = sources("script-src")
        .or_else(|| sources("default-src"))
        .unwrap_or_else(|| panic!("{what}: neither script-src nor default-src: {policy}"));
    for source in &scripts {
        let source = source.to_ascii_lowercase();
        assert!(
            source == "'none'"
                || source.starts_with("'sha256-")
                || source.starts_with("'sha384-")
                || source.starts_with("'sha512-")
                || source.starts_with("'nonce-"),
            "{what}: script source {source} allows script not named by hash or nonce: {policy}"
        );
    }
    assert!(
        !policy.contains("unsafe-eval") && !policy.contains("strict-dynamic"),
        "{what}: {policy}"
    );
    assert_eq!(
        sources("frame-ancestors"),
        Some(vec!["'none'".to_owned()]),
        "{what}: {policy}"
    );
    assert!(sources("base-uri").is_some(), "{what}: {policy}");
    assert!(
        sources("object-src").is_some() || sources("default-src").is_some(),
        "{what}: {policy}"
    );
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
    assert!(
        [
            "no-referrer",
            "same-origin",
            "strict-origin",
            "strict-origin-when-cross-origin"
        ]
        .contains(&header("referrer-policy").as_str()),
        "{what}: Referrer-Policy {:?}",
        header("referrer-policy")
    );
    for script in inline_scripts(&answer.body) {
        let hash = format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script.as_bytes()))
        );
        assert!(
            scripts.contains(&hash),
            "{what}: an inline script is not named by the policy {policy}"
        );
    }
    assert!(
        !answer.body.contains(" onclick=") && !answer.body.contains(" onload="),
        "{what}: inline event handlers cannot run under the policy"
    );
}

async fn every_html_page_sends_a_strict_content_security_policy(backend: Backend) {
    let route = PaywallRouteConfig {
        description: "Premium <b>quotes</b>".to_owned(),
        ..paywall_route("/premium/*", "http://127.0.0.1:9")
    };
    let env = Env::with(
        Options::on(backend)
            .without_chain()
            .configure(|state| with_paywall(state, &[route])),
    )
    .await;
    env.deposit_wallet(&env.merchant.id).await;
    let (name, value) = env.auth();
    let (status, order) = env
        .post(
            "/api/payment-orders/",
            &[(name, value.as_str())],
            &json!({"amount": "1", "currency": "USDC", "blockchain": "base-sepolia", "order_info": "{}", "nonce": 1, "redirect_url": "https://shop.example/thanks"}),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["data"]["order_id"].as_str().unwrap();

    // Every route the API documents as HTML.
    let (_, document) = env.get("/openapi.json", &[]).await;
    let mut pages = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        let Some(get) = item.get("get") else { continue };
        let html = get["responses"]
            .as_object()
            .unwrap()
            .values()
            .any(|response| {
                response
                    .get("content")
                    .and_then(Value::as_object)
                    .is_some_and(|content| content.keys().any(|kind| kind.starts_with("text/html")))
            });
        if html {
            pages.push(path.replace("{order_id}", order_id));
        }
    }
    assert!(
        pages.contains(&format!("/pay/{order_id}")),
        "the checkout page is documented as HTML: {pages:?}"
    );
    for page in &pages {
        for browser in [false, true] {
            let answer = fetch(&format!("{}{page}", env.base), browser).await;
            assert_eq!(answer.status, 200, "{page}: {}", answer.body);
            assert_strict(page, &answer);
        }
    }
    // The checkout page runs exactly its own script.
    let checkout = fetch(&format!("{}/pay/{order_id}", env.base), true).await;
    assert_eq!(inline_scripts(&checkout.body).len(), 1, "one inline script");

    // The paywall's 402 page for browsers.
    let paywall = fetch(&format!("{}/premium/quote", env.base), true).await;
    assert_eq!(paywall.status, 402, "{}", paywall.body);
    assert_strict("the paywall's 402 page", &paywall);
    assert!(!paywall.body.contains("<b>"), "the description is escaped");

    // A browser opening an unknown order's link gets a page, under the same policy.
    let missing = fetch(&format!("{}/pay/ORD-nope", env.base), true).await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_strict("the unknown order's page", &missing);
    assert!(missing.body.contains("ORD-nope"), "{}", missing.body);
    // The id in the link is the visitor's text: shown, never run.
    let hostile = fetch(
        &format!("{}/pay/%3Cscript%3Ealert(1)%3C%2Fscript%3E", env.base),
        true,
    )
    .await;
    assert_eq!(hostile.status, 404, "{}", hostile.body);
    assert_strict("an unknown order's page with markup in its id", &hostile);
    assert!(!hostile.body.contains("<script>"), "{}", hostile.body);
    assert!(hostile.body.contains("&lt;script&gt;"), "{}", hostile.body);

    // What is not HTML is not sniffed as HTML either.
    for (path, browser) in [
        ("/openapi.json", true),
        ("/pay/ORD-nope", false),
        ("/no/such/route", true),
    ] {
        let answer = fetch(&format!("{}{path}", env.base), browser).await;
        assert_eq!(
            answer
                .headers
                .get("x-content-type-options")
                .and_then(|v| v.to_str().ok()),
            Some("nosniff"),
            "{path}"
        );
        assert!(
            !answer
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .starts_with("text/html"),
            "{path}"
        );
    }
}

coffer_store::on_both_databases!(every_html_page_sends_a_strict_content_security_policy);
