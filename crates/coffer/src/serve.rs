//! Building and running the server: open the store, build the state, bind, serve until a
//! shutdown signal, let requests in flight finish.

use std::net::SocketAddr;
use std::time::Duration;

use coffer_core::ChainRegistry;
use coffer_gateway::workers::Intervals;
use coffer_server::AppState;
use tokio::net::TcpListener;

use crate::config::Config;

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    state: AppState,
    grace: Duration,
    intervals: Intervals,
    connection_limits: coffer_server::app::ConnectionLimits,
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
    /// The database holds secrets that the configured master key (or its absence) cannot
    /// open.
    #[error("{0}")]
    Secrets(String),
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
        let sealer = config.secrets.sealer()?;
        let store = coffer_store::open(&config.database.url, sealer)
            .await
            .map_err(|source| StartError::Store {
                url: coffer_store::redact_url(&config.database.url),
                source,
            })?;
        check_master_key(&*store)
            .await
            .map_err(|source| match source {
                CheckError::Store(source) => StartError::Store {
                    url: coffer_store::redact_url(&config.database.url),
                    source,
                },
                CheckError::Refused(message) => StartError::Secrets(message),
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
            abandoned_after: Duration::from_secs(config.x402.abandoned_claim_seconds),
        };
        let rates = config.fiat_rates()?;
        let mut state = AppState::new(store, registry, &public_url)?
            .with_settlement(signers, settle)
            .with_fiat_rates(rates)
            .with_facilitator_policy(config.x402.facilitator.clone())
            .with_outbound_policy(config.outbound.policy()?);
        state.readiness_timeout = Duration::from_secs(config.server.readiness_timeout_seconds);
        state.limits = config.server.request_limits();
        let paywall = coffer_server::paywall::Paywall::new(
            &config.paywall.routes,
            &state.gateway.chains,
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
            connection_limits: config.server.connection_limits(),
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
    pub fn with_outbound_policy(
        mut self,
        policy: coffer_gateway::outbound::OutboundPolicy,
    ) -> Self {
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
        let workers = coffer_gateway::workers::spawn_all(
            &self.state.gateway,
            self.intervals,
            &workers_stopping,
        );
        let router = coffer_server::router(self.state);
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight");
            let _ = stop_workers.send(true);
            let _ = stopping_tx.send(());
        };
        let server =
            coffer_server::app::serve_with(self.listener, router, self.connection_limits, signal);
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

/// Why [`check_master_key`] refused.
enum CheckError {
    Store(coffer_store::StoreError),
    Refused(String),
}

/// Refuses to serve a database whose secrets the configured master key cannot open: without a
/// key when any secret is stored, or with a key other than the one they were sealed with.
/// An empty database is served without a key (there is nothing to open; creating a merchant
/// or a credential then fails with a message saying how to make one).
async fn check_master_key(store: &dyn coffer_store::Store) -> Result<(), CheckError> {
    let census = store.secrets_census().await.map_err(CheckError::Store)?;
    let configured = store.master_key_id();
    let Some(key_id) = configured else {
        if census.total() == 0 {
            tracing::warn!(
                "no master key is configured: merchants and credentials cannot be created until \
                 one is (secrets.master_key_file or COFFER_MASTER_KEY)"
            );
            return Ok(());
        }
        let stored = count_secrets(census.total());
        let make = "(umask 077; coffer secrets generate-key > master.key)";
        return Err(CheckError::Refused(if census.sealed.is_empty() {
            format!(
                "no master key is configured, and the database holds {stored} (webhook, GatePay \
                 and OKX secrets) stored before Coffer encrypted them: make a master key with \
                 `{make}`, set secrets.master_key_file = \"master.key\" (or put the key in \
                 COFFER_MASTER_KEY) and start again; they are encrypted at start"
            )
        } else {
            let ids: Vec<&str> = census.sealed.keys().map(String::as_str).collect();
            format!(
                "no master key is configured, and the database holds {stored} (webhook, GatePay \
                 and OKX secrets) encrypted with master key {}: set secrets.master_key_file (or \
                 COFFER_MASTER_KEY) to that key; a new key is made with `{make}`, but only the \
                 key they were encrypted with opens them",
                ids.join(", ")
            )
        }));
    };
    let foreign = census.sealed_with_other_keys(Some(key_id));
    if foreign > 0 {
        let foreign = count_secrets(foreign);
        let others: Vec<&str> = census
            .sealed
            .keys()
            .map(String::as_str)
            .filter(|id| *id != key_id)
            .collect();
        return Err(CheckError::Refused(format!(
            "the database holds {foreign} encrypted with master key {}, but the \
             configured master key is {key_id}: configure the key they were encrypted with, or \
             finish a rotation with `coffer secrets rotate --new-key-file <file of key {key_id}>` \
             run with the old key configured",
            others.join(", ")
        )));
    }
    Ok(())
}

fn count_secrets(count: u64) -> String {
    if count == 1 {
        "1 secret".to_owned()
    } else {
        format!("{count} secrets")
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
