//! Running the `coffer` binary and asking it: the command, a server on the port it bound,
//! waiting for `/healthz`, a request's JSON answer, what a created payment order says to pay.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::Address;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

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

/// A `coffer serve` started by [`serve_on_its_own_port`]: the process, the port it bound, and
/// its log so far (JSON lines).
pub struct Serving {
    /// The process.
    pub child: Child,
    /// The port it listens on.
    pub port: u16,
    /// What it logged.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Starts `command` (a `coffer serve`) on a port the server binds itself (`127.0.0.1:0`) and
/// reads the port back from its "coffer is listening" log line, so that no port is picked
/// beforehand for another process to take meanwhile. Its log (JSON, warnings and that line)
/// is kept and passed on to the test's output. `Err` with the log when it stops first.
pub async fn serve_on_its_own_port(mut command: Command) -> Result<Serving, String> {
    command
        .env("COFFER__SERVER__LISTEN", "127.0.0.1:0")
        .env("COFFER__LOG__FORMAT", "json")
        .env("RUST_LOG", "warn,coffer::cli=info")
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (found, port) = tokio::sync::oneshot::channel();
    tokio::spawn({
        let log = log.clone();
        async move {
            let mut found = Some(found);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = listening_port(&line)
                    && let Some(found) = found.take()
                {
                    let _ = found.send(port);
                }
                eprintln!("{line}");
                log.lock().unwrap().push(line);
            }
        }
    });
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            port = port => port.ok(),
            _ = child.wait() => None,
        }
    })
    .await
    .ok()
    .flatten();
    match outcome {
        Some(port) => Ok(Serving { child, port, log }),
        None => {
            let _ = child.wait().await;
            // Let the reader take the last lines.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(log.lock().unwrap().join("\n"))
        }
    }
}

/// The port of a "coffer is listening" JSON log line.
fn listening_port(line: &str) -> Option<u16> {
    let entry: Value = serde_json::from_str(line).ok()?;
    let fields = entry.get("fields").unwrap_or(&entry);
    if fields["message"] != "coffer is listening" {
        return None;
    }
    let address: std::net::SocketAddr = fields["address"].as_str()?.parse().ok()?;
    Some(address.port())
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
