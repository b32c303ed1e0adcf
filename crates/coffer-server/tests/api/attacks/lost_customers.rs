//! Attack 9: lost customers. A Pelago order paid with `X-PAYMENT` must land in that order even
//! when a background path — the reconciler's sweep, which records settlements to a merchant's
//! payTo as sales — sees the settlement first. Before settlements were journaled with the order
//! they pay, the sweep could record the payment as a new sale between the settle and the
//! order's update, and the customer was told `409 PAYMENT_ALREADY_USED` with the money gone.
//!
//! 200 payments while the sweep runs continuously: every one is answered 200 and confirms its
//! own order, and no stray sale is recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use alloy::primitives::U256;
use coffer_store::testing::Backend;
use futures_util::stream::{self, StreamExt};

use crate::kit::{Auth, Env, PAY_TO};

const PAYMENTS: usize = 200;
const PRICE: u64 = 10_000;

async fn every_payment_lands_in_its_own_order(backend: Backend) {
    let env = Arc::new(Env::new(backend).await);
    let before = env.balance(PAY_TO).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = tokio::spawn({
        let (env, stop) = (env.clone(), stop.clone());
        async move {
            let mut sweeps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                env.state.gateway.sales.sweep().await.unwrap();
                sweeps += 1;
                tokio::task::yield_now().await;
            }
            sweeps
        }
    });
    let outcomes: Vec<(String, u16, serde_json::Value)> = stream::iter(0..PAYMENTS)
        .map(|_| {
            let env = env.clone();
            async move {
                let order_id = env.pelago_order("0.01").await;
                let auth = Auth::fresh(env.payer.address(), PAY_TO, PRICE);
                let (status, body) = env
                    .pelago_pay(&order_id, &auth.x_payment(auth.payload(&env.payer)))
                    .await;
                (order_id, status, body)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    stop.store(true, Ordering::Relaxed);
    let sweeps = sweeper.await.unwrap();
    assert!(sweeps > 0);

    let failed: Vec<_> = outcomes
        .iter()
        .filter(|(order_id, status, body)| {
            *status != 200 || body["orderId"].as_str() != Some(order_id.as_str())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {PAYMENTS} lost: {failed:?}",
        failed.len()
    );
    for (order_id, _, _) in &outcomes {
        let order = env.state.gateway.store.order(order_id).await.unwrap();
        assert_eq!(order.status.as_str(), "confirmed", "{order_id}");
        assert_eq!(order.amount_paid.to_base_units_string(), PRICE.to_string());
    }
    assert_eq!(
        env.order_count().await,
        PAYMENTS as u64,
        "no payment was recorded as a stray sale"
    );
    assert_eq!(
        env.balance(PAY_TO).await - before,
        U256::from(PRICE) * U256::from(PAYMENTS)
    );
}

/// The official PyPI client pays 200 Pelago orders in a row (create → 402 → `X-PAYMENT` with
/// the order id) while the real settlement reconciler runs, as in `coffer serve`: 200 of 200
/// are confirmed.
#[tokio::test]
async fn the_official_pypi_client_pays_200_orders_in_a_row() {
    use coffer_gateway::workers::Worker;
    let env = Arc::new(Env::new(Backend::Sqlite).await);
    let stop = Arc::new(AtomicBool::new(false));
    let reconciler = tokio::spawn({
        let (env, stop) = (env.clone(), stop.clone());
        async move {
            let mut worker =
                coffer_gateway::workers::reconciler::Reconciler::new(&env.state.gateway);
            while !stop.load(Ordering::Relaxed) {
                worker.run_once().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    });
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let input = serde_json::json!({
        "privateKey": format!("0x{}", alloy::hex::encode(env.payer.to_bytes())),
        "base": env.base, "apiKey": env.api_key, "count": PAYMENTS, "amount": "0.01",
    })
    .to_string();
    let python = root.join(".tools/python/bin/python");
    assert!(
        python.exists(),
        "the PyPI client is missing: run scripts/install-tools.sh"
    );
    let output = tokio::process::Command::new(python)
        .arg(root.join("interop/pelago_pay_orders.py"))
        .arg(&input)
        .output()
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    reconciler.await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), PAYMENTS);
    let lost: Vec<_> = results.iter().filter(|r| r["status"] != 200).collect();
    assert!(
        lost.is_empty(),
        "{} of {PAYMENTS} lost: {lost:?}",
        lost.len()
    );
    for result in results {
        let order = env
            .state
            .gateway
            .store
            .order(result["orderId"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(order.status.as_str(), "confirmed");
    }
    assert_eq!(env.order_count().await, PAYMENTS as u64);
}

coffer_store::on_both_databases!(
    backend: [
        every_payment_lands_in_its_own_order,
    ];
);
