//! The expirer: pending orders whose payment window closed become `expired`.
//!
//! The status comes from the same evaluation the watcher uses, so an order that was paid in
//! time is never expired, and an expired order still credits late payments (the watcher keeps
//! watching its address through the monitoring window).

use std::sync::Arc;

use coffer_core::ChainRegistry;
use coffer_store::{Store, StoreError};

use super::{Outcome, StepError, Worker};
use crate::Gateway;
use crate::orders::{PaymentOrders, Reevaluation, reevaluate};

/// Expires orders.
pub struct Expirer {
    store: Arc<dyn Store>,
    chains: Arc<ChainRegistry>,
    orders: PaymentOrders,
    wake: Arc<tokio::sync::Notify>,
    clock: crate::clock::Clock,
}

impl Expirer {
    /// An expirer over the application's store.
    pub fn new(gateway: &Gateway) -> Self {
        Expirer {
            store: gateway.store.clone(),
            chains: gateway.chains.clone(),
            orders: gateway.orders.clone(),
            wake: gateway.webhook_wakeup.clone(),
            clock: gateway.clock.clone(),
        }
    }

    /// Expires up to 500 due orders; returns how many changed.
    ///
    /// # Errors
    /// [`StepError`] when the store fails.
    pub async fn expire_due(&self, now_ms: i64) -> Result<usize, StepError> {
        let due = self.store.orders_due_to_expire(now_ms, 500).await?;
        let mut changed = 0;
        for order in due {
            let merchant = self.store.merchant(&order.merchant_id).await?;
            let payments = self.store.payments_for_order(&order.order_id).await?;
            let head = self
                .store
                .chain_cursor(order.chain_id)
                .await?
                .map_or(0, |block| block.number);
            let required = self
                .chains
                .by_chain_id(order.chain_id)
                .map_or(1, |chain| chain.confirmations);
            let gatepay = self.store.gatepay_order_of(&order.order_id).await?;
            let Some(update) = reevaluate(
                &self.orders,
                Reevaluation {
                    merchant: &merchant,
                    order: &order,
                    gatepay: gatepay.as_ref(),
                    payments: &payments,
                    head,
                    required_confirmations: required,
                    now_ms,
                    new_payments: 0,
                    orphaned_now: false,
                },
            ) else {
                continue;
            };
            match self
                .store
                .update_orders(std::slice::from_ref(&update))
                .await
            {
                Ok(()) => changed += 1,
                // The watcher changed it meanwhile; the next round sees the new state.
                Err(StoreError::Conflict(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        if changed > 0 {
            self.wake.notify_one();
        }
        Ok(changed)
    }
}

impl Worker for Expirer {
    fn name(&self) -> String {
        "expirer".to_owned()
    }

    #[tracing::instrument(name = "expirer", skip_all)]
    async fn run_once(&mut self) -> Result<Outcome, StepError> {
        let changed = self.expire_due(self.clock.now_ms()).await?;
        Ok(if changed > 0 {
            Outcome::Worked
        } else {
            Outcome::Idle
        })
    }
}
