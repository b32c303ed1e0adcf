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

use crate::Gateway;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did work; run again at once.
    Worked,
    /// Nothing to do; wait for the poll interval (or a wake-up).
    Idle,
}

/// A worker step failed; the loop backs off and retries. The error keeps its source, and says
/// whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Storage failed.
    #[error("store: {0}")]
    Store(#[from] coffer_store::StoreError),
    /// The chain's node could not be asked.
    #[error("rpc: {0}")]
    Rpc(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The chain answered something the step cannot use yet (a block not found, a reorg in
    /// the middle of the step, a row changed meanwhile); the next try reads it again.
    #[error("{0}")]
    Chain(String),
    /// The worker is not configured to run (no RPC endpoint for its chain).
    #[error("{0}")]
    Configuration(String),
}

impl StepError {
    /// Whether the same step can succeed later without anyone changing anything: false for a
    /// missing configuration and for stored data that cannot be read (corrupt, or sealed with
    /// another master key), which need an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            StepError::Store(error) => !matches!(
                error,
                coffer_store::StoreError::Corrupt { .. }
                    | coffer_store::StoreError::Secret(_)
                    | coffer_store::StoreError::UnsupportedUrl { .. }
            ),
            StepError::Rpc(_) | StepError::Chain(_) => true,
            StepError::Configuration(_) => false,
        }
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
                if error.is_retryable() {
                    tracing::warn!(worker = %name, %error, retry_in = ?backoff, "worker step failed");
                } else {
                    tracing::error!(worker = %name, %error, retry_in = ?backoff, "worker step failed; it needs an operator");
                }
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
    gateway: &Gateway,
    intervals: Intervals,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    for chain in gateway.chains.configured() {
        if let Some(watcher) = watcher::Watcher::new(gateway, chain.chain_id) {
            handles.push(tokio::spawn(run(
                watcher,
                shutdown.clone(),
                intervals.watcher,
                None,
            )));
        }
    }
    handles.push(tokio::spawn(run(
        expirer::Expirer::new(gateway),
        shutdown.clone(),
        intervals.expirer,
        None,
    )));
    handles.push(tokio::spawn(run(
        reconciler::Reconciler::new(gateway),
        shutdown.clone(),
        intervals.expirer,
        None,
    )));
    let wake = Some(gateway.webhook_wakeup.clone());
    handles.push(tokio::spawn(run(
        dispatcher::Dispatcher::new(gateway),
        shutdown.clone(),
        intervals.dispatcher,
        wake,
    )));
    handles
}
