//! Running the `coffer` binary and asking it: the command, a free port, waiting for
//! `/healthz`, a request's JSON answer, what a created payment order says to pay.

use std::process::Stdio;
use std::time::Duration;

use alloy::primitives::Address;
use serde_json::Value;
use tokio::process::Command;

/// The `coffer` binary, logging warnings only, with nothing on its standard input, killed when
/// dropped.
pub fn coffer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coffer"));
    command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// A loopback port nobody listens on (just now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `GET /healthz` on `port` gets any answer within `tries` attempts, 100 ms apart.
pub async fn wait_until_answering(port: u16, tries: u32) -> bool {
    poll_healthz(port, tries, |_| true).await
}

/// Whether `GET /healthz` on `port` answers with success within `tries` attempts, 100 ms
/// apart.
pub async fn wait_until_healthy(port: u16, tries: u32) -> bool {
    poll_healthz(port, tries, |response| response.status().is_success()).await
}

async fn poll_healthz(port: u16, tries: u32, accept: impl Fn(&reqwest::Response) -> bool) -> bool {
    let url = format!("http://127.0.0.1:{port}/healthz");
    for _ in 0..tries {
        if reqwest::get(&url)
            .await
            .is_ok_and(|response| accept(&response))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Sends `request` and reads its answer as JSON.
pub async fn json_answer(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// The order id and the deposit address of a payment order, from the answer that created it.
pub fn order_id_and_deposit(created: &Value) -> (String, Address) {
    let order_id = created["data"]["order_id"].as_str().unwrap().to_owned();
    let deposit = created["data"]["receiving_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (order_id, deposit)
}
