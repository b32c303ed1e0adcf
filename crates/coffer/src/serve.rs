//! Building and running the server: open the store, build the state, bind, serve until a
//! shutdown signal, let requests in flight finish.

use std::net::SocketAddr;
use std::time::Duration;

use coffer_core::ChainRegistry;
use coffer_server::AppState;
use coffer_server::workers::Intervals;
use tokio::net::TcpListener;

use crate::config::Config;

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    state: AppState,
    grace: Duration,
    intervals: Intervals,
}

/// Why the application could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The database could not be opened or migrated.
    #[error("database {url}: {source}")]
    Store {
        /// The URL without password.
        url: String,
        /// The cause.
        source: coffer_store::StoreError,
    },
    /// An RPC URL is invalid.
    #[error(transparent)]
    Evm(#[from] coffer_evm::EvmError),
    /// The address could not be bound or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl Application {
    /// Opens the store and binds the listener (port 0 picks a free port; see
    /// [`Application::address`]).
    ///
    /// # Errors
    /// [`StartError`] when the database, the RPC configuration or the address is unusable.
    pub async fn build(config: &Config) -> Result<Self, StartError> {
        let registry = config.registry()?;
        Self::build_with(config, registry).await
    }

    /// Like [`Application::build`] with an explicit registry (`coffer dev` adds its chains).
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn build_with(config: &Config, registry: ChainRegistry) -> Result<Self, StartError> {
        let store = coffer_store::open(&config.database.url)
            .await
            .map_err(|source| StartError::Store {
                url: coffer_store::redact_url(&config.database.url),
                source,
            })?;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| StartError::Io {
                context: format!("cannot listen on {}", config.server.listen),
                source,
            })?;
        let address = listener.local_addr().map_err(|source| StartError::Io {
            context: "cannot read the bound address".to_owned(),
            source,
        })?;
        let public_url = config
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{address}"));
        let signers = config.x402.signers()?;
        let settle = coffer_x402::settlement::SettleOptions {
            receipt_timeout: Duration::from_secs(config.x402.settle_timeout_seconds),
            max_fee_per_gas: u128::from(config.x402.max_fee_gwei) * 1_000_000_000,
            batch_window: Duration::from_millis(config.x402.batch_window_ms),
            max_batch: config.x402.max_batch,
            bump_after: Duration::from_secs(config.x402.bump_after_seconds),
        };
        let rates = config.fiat_rates()?;
        let mut state = AppState::new(store, registry, &public_url)?
            .with_settlement(signers, settle)
            .with_fiat_rates(rates)
            .with_outbound_policy(config.outbound.policy()?);
        state.readiness_timeout = Duration::from_secs(config.server.readiness_timeout_seconds);
        let paywall = coffer_server::paywall::Paywall::new(
            &config.paywall.routes,
            &state.chains,
            &public_url,
        )
        .map_err(|error| crate::config::ConfigError(error.to_string()))?;
        state.paywall = std::sync::Arc::new(paywall);
        Ok(Application {
            listener,
            address,
            state,
            intervals: Intervals {
                watcher: Duration::from_millis(config.server.watcher_poll_ms),
                ..Intervals::default()
            },
            grace: Duration::from_secs(config.server.shutdown_grace_seconds),
        })
    }

    /// The address actually bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The shared state (store, services).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Changes where webhooks and callbacks may go (`coffer dev` also allows loopback, where
    /// its webhook inbox listens).
    #[must_use]
    pub fn with_outbound_policy(mut self, policy: coffer_server::outbound::OutboundPolicy) -> Self {
        self.state = self.state.with_outbound_policy(policy);
        self
    }

    /// Changes how often idle workers poll (`coffer dev` polls faster).
    pub fn with_intervals(mut self, intervals: Intervals) -> Self {
        self.intervals = intervals;
        self
    }

    /// Serves until `shutdown` completes, then waits up to the grace period for requests in
    /// flight.
    ///
    /// # Errors
    /// [`StartError::Io`] when serving fails.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let (stop_workers, workers_stopping) = tokio::sync::watch::channel(false);
        let workers =
            coffer_server::workers::spawn_all(&self.state, self.intervals, &workers_stopping);
        let router = coffer_server::router(self.state);
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight");
            let _ = stop_workers.send(true);
            let _ = stopping_tx.send(());
        };
        let server = coffer_server::serve(self.listener, router, signal);
        tokio::pin!(server);
        let grace = self.grace;
        let result = tokio::select! {
            result = &mut server => result,
            () = async {
                let _ = stopping_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(?grace, "requests still in flight after the grace period; stopping anyway");
                Ok(())
            }
        };
        for worker in workers {
            let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
        }
        result.map_err(|source| StartError::Io {
            context: "server failed".to_owned(),
            source,
        })
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled, so a signal that arrives during start-up is kept and
/// still leads to a clean shutdown instead of the default abrupt exit.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    async move {
        let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(interrupt.take()) => {}
            () = wait(terminate.take()) => {}
        }
    }
}
