//! The settlement reconciler: resolves x402 settlements that were broadcast but whose receipt
//! did not arrive in time (or whose process restarted), rebroadcasting journaled transactions
//! the node lost, then records succeeded settlements to a merchant's payTo as orders. Every
//! [`RECHECK_EVERY`] it also asks the chain about settlements recorded failed in the last
//! [`RECHECK_FAILED_FOR`]: one whose authorization someone else submitted is corrected.

use std::sync::Arc;
use std::time::Duration;

use coffer_x402::settlement::Settler;

use super::{Outcome, StepError, Worker};
use crate::Gateway;
use crate::clock::Clock;
use crate::sales::X402Sales;

/// How often settlements recorded failed are looked at again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(30);

/// How long after it failed a settlement is looked at again: longer than x402 payments'
/// authorizations are commonly valid for.
pub const RECHECK_FAILED_FOR: Duration = Duration::from_secs(3_600);

/// Resolves pending settlements.
pub struct Reconciler {
    settler: Arc<Settler>,
    sales: X402Sales,
    clock: Clock,
    next_recheck_ms: i64,
}

impl Reconciler {
    /// A reconciler over the application's settler.
    pub fn new(gateway: &Gateway) -> Self {
        Reconciler {
            settler: gateway.settler.clone(),
            sales: gateway.sales.clone(),
            clock: gateway.clock.clone(),
            next_recheck_ms: 0,
        }
    }
}

impl Worker for Reconciler {
    fn name(&self) -> String {
        "settlement reconciler".to_owned()
    }

    #[tracing::instrument(name = "reconciler", skip_all)]
    async fn run_once(&mut self) -> Result<Outcome, StepError> {
        let mut resolved = self.settler.reconcile().await?;
        let now = self.clock.now_ms();
        if now >= self.next_recheck_ms {
            self.next_recheck_ms =
                now + i64::try_from(RECHECK_EVERY.as_millis()).unwrap_or(i64::MAX);
            resolved += self.settler.recheck_failed(RECHECK_FAILED_FOR).await?;
        }
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
