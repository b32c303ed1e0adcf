//! The settlement reconciler: resolves x402 settlements that were broadcast but whose receipt
//! did not arrive in time (or whose process restarted), rebroadcasting journaled transactions
//! the node lost.

use std::sync::Arc;

use coffer_x402::settlement::Settler;

use super::{Outcome, StepError, Worker};
use crate::app::AppState;

/// Resolves pending settlements.
pub struct Reconciler {
    settler: Arc<Settler>,
}

impl Reconciler {
    /// A reconciler over the application's settler.
    pub fn new(state: &AppState) -> Self {
        Reconciler {
            settler: state.settler.clone(),
        }
    }
}

impl Worker for Reconciler {
    fn name(&self) -> String {
        "settlement reconciler".to_owned()
    }

    async fn run_once(&mut self) -> Result<Outcome, StepError> {
        let resolved = self.settler.reconcile().await?;
        Ok(if resolved > 0 {
            Outcome::Worked
        } else {
            Outcome::Idle
        })
    }
}
