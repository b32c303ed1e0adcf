//! The expirer: pending orders whose payment window closed become `expired`.
//!
//! The status comes from the same evaluation the watcher uses, so an order that was paid in
//! time is never expired, and an expired order still credits late payments (the watcher keeps
//! watching its address through the monitoring window).

use std::sync::Arc;

use chrono::Utc;
use coffer_core::ChainRegistry;
use coffer_store::{Store, StoreError};

use super::{Outcome, StepError, Worker};
use crate::app::AppState;
use crate::orders::{PaymentOrders, reevaluate};

/// Expires orders.
pub struct Expirer {
    store: Arc<dyn Store>,
    chains: Arc<ChainRegistry>,
    orders: PaymentOrders,
    wake: Arc<tokio::sync::Notify>,
}

impl Expirer {
    /// An expirer over the application's store.
    pub fn new(state: &AppState) -> Self {
        Expirer {
            store: state.store.clone(),
            chains: state.chains.clone(),
            orders: state.orders.clone(),
            wake: state.webhook_wakeup.clone(),
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
                &merchant,
                &order,
                gatepay.as_ref(),
                &payments,
                head,
                required,
                now_ms,
                0,
                false,
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

    async fn run_once(&mut self) -> Result<Outcome, StepError> {
        let changed = self.expire_due(Utc::now().timestamp_millis()).await?;
        Ok(if changed > 0 {
            Outcome::Worked
        } else {
            Outcome::Idle
        })
    }
}
