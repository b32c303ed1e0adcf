//! The settlement reconciler: resolves x402 settlements that were broadcast but whose receipt
//! did not arrive in time (or whose process restarted), rebroadcasting journaled transactions
//! the node lost, then records succeeded settlements to a merchant's payTo as orders.

use std::sync::Arc;

use coffer_x402::settlement::Settler;

use super::{Outcome, StepError, Worker};
use crate::Gateway;
use crate::sales::X402Sales;

/// Resolves pending settlements.
pub struct Reconciler {
    settler: Arc<Settler>,
    sales: X402Sales,
}

impl Reconciler {
    /// A reconciler over the application's settler.
    pub fn new(gateway: &Gateway) -> Self {
        Reconciler {
            settler: gateway.settler.clone(),
            sales: gateway.sales.clone(),
        }
    }
}

impl Worker for Reconciler {
    fn name(&self) -> String {
        "settlement reconciler".to_owned()
    }

    #[tracing::instrument(name = "reconciler", skip_all)]
    async fn run_once(&mut self) -> Result<Outcome, StepError> {
        let resolved = self.settler.reconcile().await?;
        // Settlements that succeeded after their settle call answered become orders now.
        let recorded = match self.sales.sweep().await {
            Ok(recorded) => recorded,
            Err(error) => {
                tracing::warn!(%error, "recording x402 sales failed");
                0
            }
        };
        Ok(if resolved + recorded > 0 {
            Outcome::Worked
        } else {
            Outcome::Idle
        })
    }
}
