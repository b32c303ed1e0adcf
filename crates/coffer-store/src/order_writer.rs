//! Orders that arrive together are written together.
//!
//! Every new order goes through one queue per store. An idle queue writes an order at once;
//! orders that arrive while it is writing wait, and are then written together in one
//! transaction of three statements (orders, events, deliveries) instead of a round trip or
//! more each — and one commit, which is what a busy gateway pays for most (SQLite has one
//! writer; PostgreSQL flushes its log at every commit). An order that breaks a uniqueness rule
//! is skipped by that statement and written alone afterwards, to fail alone with its precise
//! conflict; if the batch fails as a whole, each of its orders is written alone.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::StoreError;
use crate::order_rows::{NewOrder, OrderRow};

/// The most orders written by one statement.
const MAX_ORDERS_TOGETHER: usize = 128;

/// How a backend writes orders.
pub(crate) trait WritesOrders: Clone + Send + Sync + 'static {
    /// Writes several orders and their events in one transaction, skipping any that breaks a
    /// uniqueness rule; returns the orders written.
    fn write_together(
        &self,
        orders: &[NewOrder],
    ) -> impl Future<Output = Result<Vec<OrderRow>, StoreError>> + Send;

    /// Writes one order and its event.
    fn write_alone(
        &self,
        order: NewOrder,
    ) -> impl Future<Output = Result<OrderRow, StoreError>> + Send;
}

type Caller = tokio::sync::oneshot::Sender<Result<OrderRow, StoreError>>;

/// A store's queue of new orders.
#[derive(Debug, Clone, Default)]
pub(crate) struct OrderWriter {
    queue: Arc<Mutex<OrderQueue>>,
}

/// New orders waiting to be written, and whether a task is writing them.
#[derive(Default)]
struct OrderQueue {
    waiting: Vec<(NewOrder, Caller)>,
    writing: bool,
}

impl std::fmt::Debug for OrderQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderQueue")
            .field("waiting", &self.waiting.len())
            .field("writing", &self.writing)
            .finish()
    }
}

/// Ends a writing task that stopped abnormally (a panic): the queue is no longer marked as
/// being written, and the orders still waiting are dropped, so their callers get an error
/// instead of waiting forever.
struct WritingGuard {
    queue: Arc<Mutex<OrderQueue>>,
    finished: bool,
}

impl Drop for WritingGuard {
    fn drop(&mut self) {
        if !self.finished {
            let mut queue = lock(&self.queue);
            queue.writing = false;
            queue.waiting.clear();
        }
    }
}

fn lock(queue: &Mutex<OrderQueue>) -> MutexGuard<'_, OrderQueue> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

impl OrderWriter {
    /// Writes an order and its event through `backend`, together with any that arrive
    /// meanwhile.
    pub(crate) async fn write<B: WritesOrders>(
        &self,
        backend: &B,
        order: NewOrder,
    ) -> Result<OrderRow, StoreError> {
        let (caller, outcome) = tokio::sync::oneshot::channel();
        let start_writing = {
            let mut queue = lock(&self.queue);
            queue.waiting.push((order, caller));
            !std::mem::replace(&mut queue.writing, true)
        };
        // The writing runs on its own task, so a caller that goes away never strands others.
        if start_writing {
            tokio::spawn(write_waiting(self.queue.clone(), backend.clone()));
        }
        outcome
            .await
            .unwrap_or(Err(StoreError::Database(sqlx::Error::WorkerCrashed)))
    }
}

async fn write_waiting<B: WritesOrders>(queue: Arc<Mutex<OrderQueue>>, backend: B) {
    let mut guard = WritingGuard {
        queue: queue.clone(),
        finished: false,
    };
    loop {
        let (orders, callers): (Vec<NewOrder>, Vec<Caller>) = {
            let mut queue = lock(&queue);
            if queue.waiting.is_empty() {
                queue.writing = false;
                guard.finished = true;
                return;
            }
            let size = queue.waiting.len().min(MAX_ORDERS_TOGETHER);
            queue.waiting.drain(..size).unzip()
        };
        let mut written: HashMap<String, OrderRow> = HashMap::new();
        if orders.len() > 1 {
            match backend.write_together(&orders).await {
                Ok(rows) => {
                    written.extend(rows.into_iter().map(|row| (row.order_id.clone(), row)));
                }
                Err(error) => tracing::warn!(
                    %error,
                    orders = orders.len(),
                    "writing orders together failed; writing each alone"
                ),
            }
        }
        for (order, caller) in orders.into_iter().zip(callers) {
            let outcome = match written.remove(&order.order_id) {
                Some(row) => Ok(row),
                None => backend.write_alone(order).await,
            };
            let _ = caller.send(outcome);
        }
    }
}
