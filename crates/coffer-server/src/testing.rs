//! Test support (the `testing` feature, for Coffer's own tests only): a JSON-RPC endpoint in
//! front of a real anvil that fails calls on demand — the faults an operator sees from a
//! public RPC endpoint (502s, error answers, stalls, an answer lost after the call went
//! through) that a real node will not produce when asked. Everything else is passed on to the
//! node unchanged.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng as _;
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
    /// The call is held this long, then passed on (a slow endpoint).
    Stall(Duration),
}

/// Faults met at random by every call, as on a busy public endpoint.
#[derive(Debug, Clone)]
pub struct Flakiness {
    /// Calls answered 502 without reaching the node, per thousand.
    pub bad_gateway_per_mille: u32,
    /// Calls held before they are passed on, per thousand.
    pub stall_per_mille: u32,
    /// How long a held call is held.
    pub stall: Range<Duration>,
}

/// A planned fault: the method it is for, the fault, how many calls of the method go through
/// first, and how many then meet it.
type Planned = (String, Fault, u32, u32);

#[derive(Default)]
struct Plan {
    faults: Vec<Planned>,
    flakiness: Option<Flakiness>,
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

/// What a call meets.
enum Fate {
    Forward,
    Fail(Fault),
    StallThenForward(Duration),
}

impl FaultyRpc {
    /// Starts an endpoint on a free loopback port passing calls on to `upstream`.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(upstream: &str) -> std::io::Result<FaultyRpc> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let rpc = FaultyRpc {
            url: format!("http://{}", listener.local_addr()?),
            upstream: upstream.to_owned(),
            client: reqwest::Client::new(),
            plan: Arc::default(),
        };
        let app = axum::Router::new().fallback(answer).with_state(rpc.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(rpc)
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

    /// From now on, every call meets `flakiness` (planned faults come first).
    pub fn flaky(&self, flakiness: Flakiness) {
        self.lock().flakiness = Some(flakiness);
    }

    /// Forgets every planned fault and the flakiness.
    pub fn heal(&self) {
        let mut plan = self.lock();
        plan.faults.clear();
        plan.flakiness = None;
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

    /// What the next call of `method` meets, counting planned faults down.
    fn fate_of(&self, method: &str) -> Fate {
        let mut plan = self.lock();
        plan.seen.push(method.to_owned());
        if let Some(planned) = plan
            .faults
            .iter_mut()
            .find(|(planned, _, _, left)| planned == method && *left > 0)
        {
            if planned.2 > 0 {
                planned.2 -= 1;
                return Fate::Forward;
            }
            planned.3 -= 1;
            return Fate::Fail(planned.1);
        }
        let Some(flakiness) = &plan.flakiness else {
            return Fate::Forward;
        };
        let mut random = rand::rng();
        let draw = random.random_range(0..1_000);
        if draw < flakiness.bad_gateway_per_mille {
            Fate::Fail(Fault::BadGateway)
        } else if draw < flakiness.bad_gateway_per_mille + flakiness.stall_per_mille
            && !flakiness.stall.is_empty()
        {
            Fate::StallThenForward(random.random_range(flakiness.stall.clone()))
        } else {
            Fate::Forward
        }
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
                let status = StatusCode::from_u16(answer.status().as_u16())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
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
    match rpc.fate_of(method) {
        Fate::Forward => rpc.forward(body).await,
        Fate::Fail(Fault::BadGateway) => (StatusCode::BAD_GATEWAY, "bad gateway").into_response(),
        Fate::Fail(Fault::ErrorAnswer) => error_answer(id),
        Fate::Fail(Fault::Stall(stall)) | Fate::StallThenForward(stall) => {
            tokio::time::sleep(stall).await;
            rpc.forward(body).await
        }
        Fate::Fail(Fault::ErrorAfterForwarding) => {
            let _ = rpc.forward(body.clone()).await;
            error_answer(id)
        }
    }
}
