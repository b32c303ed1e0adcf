//! A JSON-RPC endpoint in front of a real anvil that fails chosen calls on demand: the faults an
//! operator sees from a public RPC endpoint (502s, error answers, an answer lost after the call
//! went through) that a real node will not produce when asked. Everything else is passed on to
//! the node unchanged.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What a call meets instead of the node's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 502 Bad Gateway; the call never reaches the node.
    BadGateway,
    /// A JSON-RPC error answer; the call never reaches the node.
    ErrorAnswer,
    /// The call reaches the node, and the caller gets a JSON-RPC error instead of its answer
    /// (as from a proxy that retried a call that had already gone through).
    ErrorAfterForwarding,
}

#[derive(Default)]
struct Plan {
    /// `(method, fault, calls let through first, calls left to fail)`.
    faults: Vec<(String, Fault, u32, u32)>,
    /// Every method called, in order.
    seen: Vec<String>,
}

/// The endpoint; clones share the plan.
#[derive(Clone)]
pub struct FaultyRpc {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    upstream: String,
    client: reqwest::Client,
    plan: Arc<Mutex<Plan>>,
}

impl FaultyRpc {
    /// Starts an endpoint passing calls on to `upstream`.
    pub async fn start(upstream: &str) -> FaultyRpc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rpc = FaultyRpc {
            url: format!("http://{}", listener.local_addr().unwrap()),
            upstream: upstream.to_owned(),
            client: reqwest::Client::new(),
            plan: Arc::default(),
        };
        let app = axum::Router::new().fallback(answer).with_state(rpc.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        rpc
    }

    /// The next `times` calls of `method` meet `fault`.
    pub fn fail(&self, method: &str, fault: Fault, times: u32) {
        self.fail_after(method, 0, fault, times);
    }

    /// The next `pass` calls of `method` go through; the `times` after them meet `fault`.
    pub fn fail_after(&self, method: &str, pass: u32, fault: Fault, times: u32) {
        self.lock()
            .faults
            .push((method.to_owned(), fault, pass, times));
    }

    /// Forgets every planned fault.
    pub fn heal(&self) {
        self.lock().faults.clear();
    }

    /// How many calls of `method` arrived (failed or not).
    pub fn calls(&self, method: &str) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|seen| *seen == method)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fault the next call of `method` meets, counting it down.
    fn fault_for(&self, method: &str) -> Option<Fault> {
        let mut plan = self.lock();
        plan.seen.push(method.to_owned());
        let planned = plan
            .faults
            .iter_mut()
            .find(|(planned, _, _, left)| planned == method && *left > 0)?;
        if planned.2 > 0 {
            planned.2 -= 1;
            return None;
        }
        planned.3 -= 1;
        Some(planned.1)
    }

    async fn forward(&self, body: Bytes) -> Response {
        match self
            .client
            .post(&self.upstream)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(answer) => {
                let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
                let bytes = answer.bytes().await.unwrap_or_default();
                (status, [("content-type", "application/json")], bytes).into_response()
            }
            Err(_) => StatusCode::BAD_GATEWAY.into_response(),
        }
    }
}

fn error_answer(id: &Value) -> Response {
    axum::Json(json!({
        "jsonrpc": "2.0", "id": id,
        "error": {"code": -32000, "message": "upstream temporarily unavailable"}
    }))
    .into_response()
}

async fn answer(State(rpc): State<FaultyRpc>, body: Bytes) -> Response {
    // One call per request (alloy does not batch here); a batch is passed on as it is.
    let call: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(method), id) = (call["method"].as_str(), &call["id"]) else {
        return rpc.forward(body).await;
    };
    match rpc.fault_for(method) {
        None => rpc.forward(body).await,
        Some(Fault::BadGateway) => (StatusCode::BAD_GATEWAY, "bad gateway").into_response(),
        Some(Fault::ErrorAnswer) => error_answer(id),
        Some(Fault::ErrorAfterForwarding) => {
            let _ = rpc.forward(body.clone()).await;
            error_answer(id)
        }
    }
}
