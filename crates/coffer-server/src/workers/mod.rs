//! Background workers: each is a struct with a public `run_once` step that tests drive
//! directly; [`run`] wraps a step in a loop with idle polling, error backoff and shutdown.
//!
//! - [`watcher::Watcher`]: one per chain; follows the head, records payments, confirms, and
//!   handles reorgs.
//! - [`expirer::Expirer`]: moves pending orders past their window to `expired`.
//! - [`dispatcher::Dispatcher`]: delivers signed webhooks with retries.

pub mod dispatcher;
pub mod expirer;
pub mod reconciler;
pub mod watcher;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::app::AppState;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did work; run again at once.
    Worked,
    /// Nothing to do; wait for the poll interval (or a wake-up).
    Idle,
}

/// A worker step failed; the loop backs off and retries.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

impl From<coffer_store::StoreError> for StepError {
    fn from(error: coffer_store::StoreError) -> Self {
        StepError(format!("store: {error}"))
    }
}

/// How often idle workers look again.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    /// Watcher poll interval.
    pub watcher: Duration,
    /// Expirer poll interval.
    pub expirer: Duration,
    /// Dispatcher poll interval (it is also woken when events are written).
    pub dispatcher: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            watcher: Duration::from_millis(50),
            expirer: Duration::from_secs(1),
            dispatcher: Duration::from_secs(1),
        }
    }
}

/// A worker: one step at a time.
pub trait Worker: Send + 'static {
    /// A name for logs.
    fn name(&self) -> String;

    /// Does one step of work.
    fn run_once(&mut self) -> impl Future<Output = Result<Outcome, StepError>> + Send;
}

/// Runs `worker` until `shutdown` turns true: again at once after work, after `idle` (or a
/// `wake` notification) when idle, with exponential backoff up to 30 s after errors.
pub async fn run<W: Worker>(
    mut worker: W,
    mut shutdown: watch::Receiver<bool>,
    idle: Duration,
    wake: Option<Arc<Notify>>,
) {
    let name = worker.name();
    let mut backoff = Duration::from_millis(250);
    while !*shutdown.borrow() {
        let delay = match worker.run_once().await {
            Ok(Outcome::Worked) => {
                backoff = Duration::from_millis(250);
                tokio::task::yield_now().await;
                continue;
            }
            Ok(Outcome::Idle) => {
                backoff = Duration::from_millis(250);
                idle
            }
            Err(error) => {
                tracing::warn!(worker = %name, %error, retry_in = ?backoff, "worker step failed");
                let delay = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                delay
            }
        };
        let woken = async {
            match &wake {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = woken => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!(worker = %name, "stopped");
}

/// Starts a watcher per configured chain, the expirer and the dispatcher.
pub fn spawn_all(
    state: &AppState,
    intervals: Intervals,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    for chain in state.chains.configured() {
        if let Some(watcher) = watcher::Watcher::new(state, chain.chain_id) {
            handles.push(tokio::spawn(run(
                watcher,
                shutdown.clone(),
                intervals.watcher,
                None,
            )));
        }
    }
    handles.push(tokio::spawn(run(
        expirer::Expirer::new(state),
        shutdown.clone(),
        intervals.expirer,
        None,
    )));
    handles.push(tokio::spawn(run(
        reconciler::Reconciler::new(state),
        shutdown.clone(),
        intervals.expirer,
        None,
    )));
    let wake = Some(state.webhook_wakeup.clone());
    handles.push(tokio::spawn(run(
        dispatcher::Dispatcher::new(state),
        shutdown.clone(),
        intervals.dispatcher,
        wake,
    )));
    handles
}
