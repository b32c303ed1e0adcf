//! [`Gateway`]: every service of the payment core, built once over a store and a registry and
//! shared by the HTTP API, the workers and the CLI.

use std::sync::Arc;
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use coffer_core::ChainRegistry;
use coffer_evm::rpc::ChainRpc;
use coffer_store::Store;
use coffer_x402::facilitator::Facilitator;
use coffer_x402::settlement::{SettleOptions, Settler};

use crate::facilitator_policy::{FacilitatorGate, FacilitatorPolicy};
use crate::fiat::FiatRates;
use crate::gatepay::GatePayCredentials;
use crate::merchants::Merchants;
use crate::okx::OkxCredentials;
use crate::orders::PaymentOrders;
use crate::outbound::OutboundPolicy;
use crate::payout_wallets::PayoutWallets;
use crate::pelago::Pelago;
use crate::sales::X402Sales;

/// The payment core: what every handler, worker and command can reach.
#[derive(Clone)]
pub struct Gateway {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Merchants and API keys.
    pub merchants: Merchants,
    /// Merchants' payout wallets (money out).
    pub payout_wallets: PayoutWallets,
    /// Payment orders.
    pub orders: PaymentOrders,
    /// The x402 facilitator (verification).
    pub facilitator: Facilitator,
    /// The x402 settlement engine.
    pub settler: Arc<Settler>,
    /// How long a synchronous settlement waits for its receipt.
    pub settle_timeout: Duration,
    /// OKX-style credentials.
    pub okx: OkxCredentials,
    /// GatePay-style credentials.
    pub gatepay: GatePayCredentials,
    /// Base URL for links Coffer hands out (payment pages).
    pub public_url: String,
    /// Known chains.
    pub chains: Arc<ChainRegistry>,
    /// RPC clients of the configured chains.
    pub rpcs: Arc<Vec<ChainRpc>>,
    /// Wakes the webhook dispatcher when new events were written.
    pub webhook_wakeup: Arc<tokio::sync::Notify>,
    /// x402 settlements recorded as orders.
    pub sales: X402Sales,
    /// Where webhooks and callbacks may go: checked when a merchant sets a URL and when the
    /// dispatcher connects. Strict (public addresses only) unless changed with
    /// [`Gateway::with_outbound_policy`].
    pub outbound: Arc<OutboundPolicy>,
    /// Who may use the facilitator routes, and how much.
    pub facilitator_gate: Arc<FacilitatorGate>,
    /// The clock the scheduling workers (dispatcher, expirer) read: the system's unless
    /// changed with [`Gateway::with_clock`].
    pub clock: crate::clock::Clock,
}

impl Gateway {
    /// The core over a store and a registry, with RPC clients for every configured chain; links
    /// are built on `public_url`. Webhooks and callbacks may go to public addresses only.
    ///
    /// # Errors
    /// [`coffer_evm::EvmError::InvalidUrl`] when a configured RPC URL does not parse.
    pub fn new(
        store: Arc<dyn Store>,
        chains: ChainRegistry,
        public_url: &str,
    ) -> Result<Self, coffer_evm::EvmError> {
        let rpcs = chains
            .configured()
            .map(ChainRpc::new)
            .collect::<Result<Vec<_>, _>>()?;
        let chains = Arc::new(chains);
        let rpcs = Arc::new(rpcs);
        let facilitator = Facilitator::new(
            chains.clone(),
            rpcs.clone(),
            alloy::primitives::Address::ZERO,
        );
        let webhook_wakeup = Arc::new(tokio::sync::Notify::new());
        let orders = PaymentOrders::new(store.clone(), chains.clone(), public_url.to_owned());
        let sales = X402Sales::new(
            store.clone(),
            chains.clone(),
            rpcs.clone(),
            orders.clone(),
            webhook_wakeup.clone(),
        );
        Ok(Gateway {
            sales,
            outbound: Arc::new(OutboundPolicy::strict()),
            facilitator_gate: Arc::new(FacilitatorGate::default()),
            clock: crate::clock::Clock::system(),
            settler: Arc::new(Settler::new(
                facilitator.clone(),
                store.clone(),
                rpcs.clone(),
                Vec::new(),
                SettleOptions::default(),
            )),
            facilitator,
            settle_timeout: SettleOptions::default().receipt_timeout,
            okx: OkxCredentials::new(store.clone()),
            gatepay: GatePayCredentials::new(store.clone()),
            merchants: Merchants::new(store.clone()),
            payout_wallets: PayoutWallets::new(store.clone(), chains.clone(), rpcs.clone()),
            orders,
            public_url: public_url.trim_end_matches('/').to_owned(),
            store,
            chains,
            rpcs,
            webhook_wakeup,
        })
    }

    /// Sets the clock the dispatcher, the expirer and the settler read (a manual one in
    /// tests), while the gateway is being built (before it is shared).
    #[must_use]
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.settler = match Arc::try_unwrap(self.settler) {
            Ok(settler) => Arc::new(settler.with_clock(clock.clone())),
            Err(shared) => shared,
        };
        self.merchants = self.merchants.with_clock(clock.clone());
        self.clock = clock;
        self
    }

    /// Converts fiat prices with `rates` (the default table has the stablecoins at 1:1 to USD).
    #[must_use]
    pub fn with_fiat_rates(mut self, rates: FiatRates) -> Self {
        self.orders = self.orders.with_fiat_rates(rates);
        self
    }

    /// Admits facilitator requests under `policy` (the default: payments to registered payTo
    /// addresses only, at least 0.001 token units, rate-limited per payer and client).
    #[must_use]
    pub fn with_facilitator_policy(mut self, policy: FacilitatorPolicy) -> Self {
        self.facilitator_gate = Arc::new(FacilitatorGate::new(policy));
        self
    }

    /// Sends webhooks and callbacks where `policy` allows, and checks merchants' URLs with it
    /// (`coffer dev` and tests with local endpoints allow loopback).
    #[must_use]
    pub fn with_outbound_policy(mut self, policy: OutboundPolicy) -> Self {
        let policy = Arc::new(policy);
        self.merchants = self.merchants.with_outbound_policy(policy.clone());
        self.orders = self.orders.with_outbound_policy(policy.clone());
        self.outbound = policy;
        self
    }

    /// Configures the x402 settlement signers (the first one also simulates verifications).
    #[must_use]
    pub fn with_settlement(
        mut self,
        signers: Vec<PrivateKeySigner>,
        options: SettleOptions,
    ) -> Self {
        let caller = signers
            .first()
            .map_or(alloy::primitives::Address::ZERO, PrivateKeySigner::address);
        self.facilitator = Facilitator::new(self.chains.clone(), self.rpcs.clone(), caller);
        self.settle_timeout = options.receipt_timeout;
        self.settler = Arc::new(
            Settler::new(
                self.facilitator.clone(),
                self.store.clone(),
                self.rpcs.clone(),
                signers,
                options,
            )
            .with_clock(self.clock.clone()),
        );
        self
    }

    /// The Pelago-compatible x402 order service over this core.
    pub fn pelago(&self) -> Pelago {
        Pelago::new(
            self.store.clone(),
            self.chains.clone(),
            self.facilitator.clone(),
            self.settler.clone(),
            self.settle_timeout,
            self.sales.clone(),
        )
    }
}
