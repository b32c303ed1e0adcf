//! The ledger's conformance suite, run against every backend: deposit wallets, payment orders,
//! listing, versioned updates, watcher steps (payments, reorgs, pruning), the watcher's and
//! expirer's queries, and the webhook outbox. Each test body takes a fresh store.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use coffer_core::{Amount, MerchantId, OrderStatus, PaymentSubStatus};
use coffer_store::{
    AttemptOutcome, AttemptRow, ChainBlock, ChainStep, Constraint, DeliveryRow, DeliveryStatus,
    DueDelivery, EventRow, NewDelivery, NewEvent, NewMerchant, NewOrder, NewPayment, OrderOrdering,
    OrderQuery, OrderRow, OrderUpdate, OrphanedPayment, PaymentRow, Redelivery, RedeliveryLimit,
    Store, StoreError, WalletRow,
};

/// A fixed "now" (unix ms) the tests count from.
const T0: i64 = 1_700_000_000_000;
const SECOND: i64 = 1_000;
const HOUR: i64 = 3_600 * SECOND;

const XPUB_A: &str = "xpub6CUGRUonZSQ4TWtTMmzXdrXDtypWKiKrhko4egpiMZbpiaQL2jkwSB1icqYh2cfDfVxdx4df189oLKnC5fSwqPfgyP3hooxujYzAu3fDVmz";
const XPUB_B: &str = "xpub6BosfCnifzxcFwrSzQiqu2DBVTshkCXacvNsWGYJVVhhawA7d4R5WSWGFNbi8Aw6ZRc1brxMyWMzG3DSSSSoekkudhUd9yLb6qx39T9nMdj";

const USDC: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
const USDT: &str = "0xdac17f958d2ee523a2206206994597c13d831ec7";
const HOOK_URL: &str = "https://shop.example/hooks";

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

fn merchant(suffix: &str) -> NewMerchant {
    NewMerchant {
        id: MerchantId::from_suffix(suffix).expect("valid id"),
        name: format!("Shop {suffix}"),
        webhook_url: Some(HOOK_URL.to_owned()),
        webhook_secret: format!("whsec_{suffix}"),
        created_at: Utc.timestamp_opt(1_700_000_000, 0).single().expect("time"),
    }
}

async fn add_merchant(store: &dyn Store, suffix: &str) -> MerchantId {
    let new = merchant(suffix);
    let id = new.id.clone();
    store.insert_merchant(new).await.expect("insert merchant");
    id
}

fn order_id(n: u32) -> String {
    format!("ORD-{n:04}")
}

/// Order number `n`: nonce `n`, deposit address and derivation index `n`, created `n` seconds
/// after [`T0`], a one-hour window and a day of late monitoring, 1 USDC on Ethereum, with a
/// `payment_order.created` event that has a webhook delivery.
fn new_order(merchant: &MerchantId, n: u32) -> NewOrder {
    let id = order_id(n);
    let created = T0 + i64::from(n) * SECOND;
    NewOrder {
        order_id: id.clone(),
        merchant_id: merchant.clone(),
        chain_id: 1,
        blockchain: "ethereum".to_owned(),
        currency: "USDC".to_owned(),
        asset_address: Some(USDC.to_owned()),
        decimals: 6,
        amount: Amount::from(1_000_000),
        underpayment_tolerance: Amount::from(10_000),
        receiving_address: format!("0x{n:040X}"),
        derivation_index: n,
        order_info: format!(r#"{{"sku":"item-{n}"}}"#),
        nonce: i64::from(n),
        webhook_url: Some(HOOK_URL.to_owned()),
        redirect_url: Some("https://shop.example/thanks".to_owned()),
        idempotency_key: None,
        request_hash: None,
        created_at_ms: created,
        expires_at_ms: created + HOUR,
        monitor_until_ms: created + 24 * HOUR,
        external_reference: None,
        event: NewEvent {
            event_id: format!("evt_created_{n}"),
            merchant_id: merchant.clone(),
            order_id: Some(id.clone()),
            event_type: "payment_order.created".to_owned(),
            payload: format!(r#"{{"order_id":"{id}","status":"pending"}}"#),
            format: coffer_store::WebhookFormat::Coffer,
            created_at_ms: created,
            delivery: Some(NewDelivery {
                delivery_id: format!("whd_created_{n}"),
                url: HOOK_URL.to_owned(),
            }),
        },
    }
}

/// What a freshly inserted `new` must read back as.
fn expected_row(new: &NewOrder, id: i64) -> OrderRow {
    OrderRow {
        id,
        order_id: new.order_id.clone(),
        merchant_id: new.merchant_id.clone(),
        chain_id: new.chain_id,
        blockchain: new.blockchain.clone(),
        currency: new.currency.clone(),
        asset_address: new.asset_address.clone(),
        decimals: new.decimals,
        amount: new.amount,
        underpayment_tolerance: new.underpayment_tolerance,
        amount_paid: Amount::from(0),
        status: OrderStatus::Pending,
        sub_status: PaymentSubStatus::None,
        receiving_address: new.receiving_address.clone(),
        derivation_index: new.derivation_index,
        order_info: new.order_info.clone(),
        nonce: new.nonce,
        webhook_url: new.webhook_url.clone(),
        redirect_url: new.redirect_url.clone(),
        idempotency_key: new.idempotency_key.clone(),
        request_hash: new.request_hash.clone(),
        closed: false,
        created_at_ms: new.created_at_ms,
        expires_at_ms: new.expires_at_ms,
        monitor_until_ms: new.monitor_until_ms,
        confirmed_at_ms: None,
        updated_at_ms: new.created_at_ms,
        version: 0,
        sold: false,
    }
}

fn event(
    order: &OrderRow,
    event_id: &str,
    event_type: &str,
    at: i64,
    delivery: Option<&str>,
) -> NewEvent {
    NewEvent {
        event_id: event_id.to_owned(),
        merchant_id: order.merchant_id.clone(),
        order_id: Some(order.order_id.clone()),
        event_type: event_type.to_owned(),
        payload: format!(
            r#"{{"order_id":"{}","event":"{event_type}"}}"#,
            order.order_id
        ),
        format: coffer_store::WebhookFormat::Coffer,
        created_at_ms: at,
        delivery: delivery.map(|id| NewDelivery {
            delivery_id: id.to_owned(),
            url: HOOK_URL.to_owned(),
        }),
    }
}

/// An update moving `order` (as read) to `status`, keeping everything else.
fn update(order: &OrderRow, status: OrderStatus, at: i64) -> OrderUpdate {
    OrderUpdate {
        order_id: order.order_id.clone(),
        expected_version: order.version,
        status,
        sub_status: order.sub_status,
        amount_paid: order.amount_paid,
        confirmed_at_ms: order.confirmed_at_ms,
        closed: order.closed,
        updated_at_ms: at,
        events: Vec::new(),
    }
}

/// Block `number` on fork `fork` (a hex digit), its parent on fork `parent_fork`.
fn block(number: u64, fork: char, parent_fork: char) -> ChainBlock {
    ChainBlock {
        number,
        hash: block_hash(number, fork),
        parent_hash: block_hash(number - 1, parent_fork),
    }
}

fn block_hash(number: u64, fork: char) -> String {
    format!("0x{fork}{number:063x}")
}

fn payment(order: &OrderRow, tx: u32, log_index: i64, amount: u64, at: &ChainBlock) -> NewPayment {
    NewPayment {
        chain_id: order.chain_id,
        tx_hash: format!("0x{tx:064x}"),
        log_index,
        order_id: order.order_id.clone(),
        asset_address: order.asset_address.clone(),
        sender: "0x00000000000000000000000000000000000000aa".to_owned(),
        recipient: order.receiving_address.clone(),
        amount: Amount::from(amount),
        block_number: at.number,
        block_hash: at.hash.clone(),
        block_time: 1_700_000_000 + i64::try_from(at.number).expect("small"),
        detected_at_ms: T0 + 10 * SECOND,
    }
}

/// A step adding `blocks` (the last is the cursor), keeping 64 blocks.
fn step(
    chain_id: u64,
    blocks: Vec<ChainBlock>,
    payments: Vec<NewPayment>,
    order_updates: Vec<OrderUpdate>,
) -> ChainStep {
    ChainStep {
        chain_id,
        rewind_to: None,
        orphans: Vec::new(),
        cursor: blocks.last().expect("a block").clone(),
        blocks,
        payments,
        order_updates,
        keep_blocks: 64,
        now_ms: T0 + 10 * SECOND,
    }
}

fn stored(payment: &NewPayment, orphaned: bool) -> PaymentRow {
    PaymentRow {
        payment: payment.clone(),
        orphaned,
    }
}

fn query(merchant: &MerchantId) -> OrderQuery {
    OrderQuery {
        merchant_id: merchant.clone(),
        status: None,
        chain_id: None,
        currency: None,
        ordering: OrderOrdering::NewestFirst,
        offset: 0,
        limit: 100,
    }
}

async fn listed(store: &dyn Store, query: &OrderQuery) -> (Vec<String>, u64) {
    let (orders, total) = store.list_orders(query).await.expect("list");
    (orders.into_iter().map(|o| o.order_id).collect(), total)
}

fn ids(orders: &[OrderRow]) -> Vec<String> {
    orders.iter().map(|o| o.order_id.clone()).collect()
}

fn event_ids(events: &[EventRow]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

async fn claimed_ids(store: &dyn Store, now_ms: i64, lease_ms: i64, limit: u64) -> Vec<String> {
    let mut ids: Vec<String> = store
        .claim_due_deliveries(now_ms, lease_ms, limit)
        .await
        .expect("claim")
        .into_iter()
        .map(|due| due.delivery.delivery_id)
        .collect();
    ids.sort();
    ids
}

async fn delivery(store: &dyn Store, merchant: &MerchantId, delivery_id: &str) -> DeliveryRow {
    deliveries_of(store, merchant, None, 100)
        .await
        .into_iter()
        .find(|d| d.delivery_id == delivery_id)
        .unwrap_or_else(|| panic!("no delivery {delivery_id}"))
}

fn attempt(
    delivery_id: &str,
    at: i64,
    status_code: Option<u16>,
    error: Option<&str>,
) -> AttemptRow {
    AttemptRow {
        delivery_id: delivery_id.to_owned(),
        attempted_at_ms: at,
        status_code,
        error: error.map(str::to_owned),
        duration_ms: 120,
    }
}

/// Blocks `numbers` on fork `fork`, each the parent of the next.
fn consecutive(numbers: std::ops::RangeInclusive<u64>, fork: char) -> Vec<ChainBlock> {
    numbers.map(|number| block(number, fork, fork)).collect()
}

async fn chain_block(store: &dyn Store, chain_id: u64, number: u64) -> Option<ChainBlock> {
    store.chain_block(chain_id, number).await.expect("block")
}

async fn next_index(store: &dyn Store, merchant: &MerchantId, chain_id: u64) -> Option<u32> {
    let wallet = store.wallet(merchant, chain_id).await.expect("read");
    wallet.map(|w| w.next_index)
}

async fn events_of(
    store: &dyn Store,
    merchant: &MerchantId,
    order_id: Option<&str>,
    limit: u64,
) -> Vec<EventRow> {
    store
        .events(merchant, order_id, limit)
        .await
        .expect("events")
}

async fn deliveries_of(
    store: &dyn Store,
    merchant: &MerchantId,
    event_id: Option<&str>,
    limit: u64,
) -> Vec<DeliveryRow> {
    store
        .deliveries(merchant, event_id, limit)
        .await
        .expect("deliveries")
}

async fn insert(store: &dyn Store, new: NewOrder) -> OrderRow {
    store.insert_order(new).await.expect("insert")
}

async fn payments_of(store: &dyn Store, order: &OrderRow) -> Vec<PaymentRow> {
    store
        .payments_for_order(&order.order_id)
        .await
        .expect("payments")
}

fn ms(number: u32) -> i64 {
    i64::from(number) * SECOND
}

// ---------------------------------------------------------------------------------------------
// Wallets
// ---------------------------------------------------------------------------------------------

async fn a_wallet_reads_back_and_the_all_chains_wallet_is_the_fallback(store: &dyn Store) {
    let shop = add_merchant(store, "wallets").await;
    let all = store.set_wallet(&shop, 0, XPUB_A, T0).await.expect("set");
    assert_eq!(
        all,
        WalletRow {
            merchant_id: shop.clone(),
            chain_id: 0,
            xpub: XPUB_A.to_owned(),
            next_index: 0,
        }
    );
    for chain in [0, 1, 137] {
        assert_eq!(
            store.wallet(&shop, chain).await.expect("read"),
            Some(all.clone()),
            "chain {chain} falls back to the all-chains wallet"
        );
    }

    let polygon = store.set_wallet(&shop, 137, XPUB_B, T0).await.expect("set");
    assert_eq!((polygon.chain_id, polygon.xpub.as_str()), (137, XPUB_B));
    assert_eq!(store.wallet(&shop, 137).await.expect("read"), Some(polygon));
    assert_eq!(store.wallet(&shop, 1).await.expect("read"), Some(all));

    // The chain's own wallet wins whichever was set first.
    let other = add_merchant(store, "walletsfirst").await;
    let base = store
        .set_wallet(&other, 8453, XPUB_B, T0)
        .await
        .expect("set");
    store.set_wallet(&other, 0, XPUB_A, T0).await.expect("set");
    assert_eq!(store.wallet(&other, 8453).await.expect("read"), Some(base));
    assert_eq!(
        store.wallet(&other, 1).await.expect("read").map(|w| w.xpub),
        Some(XPUB_A.to_owned())
    );
}

async fn there_is_no_wallet_for_an_unknown_merchant_or_chain(store: &dyn Store) {
    let shop = add_merchant(store, "nowallet").await;
    assert_eq!(store.wallet(&shop, 1).await.expect("read"), None);
    store.set_wallet(&shop, 137, XPUB_A, T0).await.expect("set");
    assert_eq!(store.wallet(&shop, 1).await.expect("read"), None);
    assert_eq!(store.wallet(&shop, 0).await.expect("read"), None);
    let stranger = MerchantId::from_suffix("stranger").expect("id");
    assert_eq!(store.wallet(&stranger, 137).await.expect("read"), None);
    assert!(
        matches!(
            store.set_wallet(&stranger, 1, XPUB_A, T0).await,
            Err(StoreError::NotFound("merchant"))
        ),
        "a wallet needs an existing merchant"
    );
}

async fn indexes_reserved_in_blocks_never_overlap(store: &dyn Store) {
    let shop = add_merchant(store, "blocks").await;
    let wallet = store.set_wallet(&shop, 0, XPUB_A, T0).await.expect("set");
    let first = store
        .reserve_address_indexes(&wallet, 16)
        .await
        .expect("block");
    let single = store.reserve_address_index(&wallet).await.expect("single");
    let second = store
        .reserve_address_indexes(&wallet, 16)
        .await
        .expect("block");
    assert_eq!((first, single, second), (0, 16, 17));
    assert_eq!(next_index(store, &shop, 1).await, Some(33));
}

async fn address_indexes_are_handed_out_once_and_survive_setting_the_same_key(store: &dyn Store) {
    let shop = add_merchant(store, "indexes").await;
    let wallet = store.set_wallet(&shop, 0, XPUB_A, T0).await.expect("set");
    let polygon = store.set_wallet(&shop, 137, XPUB_A, T0).await.expect("set");
    let mut handed = Vec::new();
    for _ in 0..3 {
        handed.push(store.reserve_address_index(&wallet).await.expect("reserve"));
    }
    assert_eq!(handed, [0, 1, 2]);
    assert_eq!(next_index(store, &shop, 1).await, Some(3));
    // Each wallet counts on its own.
    assert_eq!(
        store
            .reserve_address_index(&polygon)
            .await
            .expect("reserve"),
        0
    );

    let again = store
        .set_wallet(&shop, 0, XPUB_A, T0 + HOUR)
        .await
        .expect("set again");
    assert_eq!(again.next_index, 3, "setting the same key keeps the index");
    assert_eq!(
        store.reserve_address_index(&again).await.expect("reserve"),
        3
    );
    assert_eq!(
        store.reserve_address_index(&wallet).await.expect("reserve"),
        4
    );
}

async fn a_new_key_restarts_the_index_and_retires_the_old_one(store: &dyn Store) {
    let shop = add_merchant(store, "rotate").await;
    let old = store.set_wallet(&shop, 1, XPUB_A, T0).await.expect("set");
    for expected in 0..2 {
        assert_eq!(
            store.reserve_address_index(&old).await.expect("reserve"),
            expected
        );
    }
    let new = store
        .set_wallet(&shop, 1, XPUB_B, T0)
        .await
        .expect("replace");
    assert_eq!(
        new,
        WalletRow {
            merchant_id: shop.clone(),
            chain_id: 1,
            xpub: XPUB_B.to_owned(),
            next_index: 0,
        }
    );
    assert!(
        matches!(
            store.reserve_address_index(&old).await,
            Err(StoreError::NotFound("wallet"))
        ),
        "the replaced key hands out nothing more"
    );
    assert_eq!(store.reserve_address_index(&new).await.expect("reserve"), 0);
    assert_eq!(next_index(store, &shop, 1).await, Some(1));
}

async fn concurrent_reservations_never_share_an_index(store: Arc<dyn Store>) {
    let shop = add_merchant(&*store, "concurrent").await;
    let wallet = store.set_wallet(&shop, 0, XPUB_A, T0).await.expect("set");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = Arc::clone(&store);
        let wallet = wallet.clone();
        tasks.spawn(async move { store.reserve_address_index(&wallet).await });
    }
    let mut handed: Vec<u32> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|result| result.expect("reserve"))
        .collect();
    handed.sort_unstable();
    assert_eq!(handed, (0..20).collect::<Vec<u32>>());
    assert_eq!(next_index(&*store, &shop, 0).await, Some(20));
}

// ---------------------------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------------------------

async fn an_inserted_order_starts_pending_and_reads_back_equal(store: &dyn Store) {
    let shop = add_merchant(store, "orders").await;
    let mut new = new_order(&shop, 1);
    new.idempotency_key = Some("idem-1".to_owned());
    new.request_hash = Some("9f86d081884c7d659a2feaa0c55ad015".to_owned());
    new.asset_address = None;
    new.currency = "ETH".to_owned();
    new.decimals = 18;
    new.amount = Amount::from(2_500_000_000_000_000_000);
    new.redirect_url = None;
    let first = insert(store, new.clone()).await;
    assert!(first.id > 0, "ids are positive: {}", first.id);
    assert_eq!(first, expected_row(&new, first.id));
    assert_eq!(store.order(&new.order_id).await.expect("read"), first);

    let second_new = new_order(&shop, 2);
    let second = insert(store, second_new.clone()).await;
    assert_eq!(
        second,
        expected_row(&second_new, first.id + 1),
        "ids are sequential"
    );

    assert!(matches!(
        store.order("ORD-missing").await,
        Err(StoreError::NotFound("payment order"))
    ));
}

async fn an_order_is_written_with_its_creation_event_and_delivery(store: &dyn Store) {
    let shop = add_merchant(store, "outbox").await;
    let other = add_merchant(store, "outboxother").await;
    let with_hook = new_order(&shop, 1);
    let mut without_hook = new_order(&shop, 2);
    without_hook.event.delivery = None;
    insert(store, with_hook.clone()).await;
    insert(store, without_hook.clone()).await;

    let events = events_of(store, &shop, Some(&with_hook.order_id), 10).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let created = &events[0];
    assert!(created.id > 0);
    assert_eq!(
        created,
        &EventRow {
            id: created.id,
            event_id: "evt_created_1".to_owned(),
            merchant_id: shop.clone(),
            order_id: Some(with_hook.order_id.clone()),
            event_type: "payment_order.created".to_owned(),
            payload: with_hook.event.payload.clone(),
            format: coffer_store::WebhookFormat::Coffer,
            created_at_ms: with_hook.created_at_ms,
        }
    );
    assert_eq!(store.event("evt_created_1").await.expect("event"), *created);
    assert!(matches!(
        store.event("evt_missing").await,
        Err(StoreError::NotFound("event"))
    ));

    let deliveries = deliveries_of(store, &shop, Some("evt_created_1"), 10).await;
    assert_eq!(
        deliveries,
        [DeliveryRow {
            delivery_id: "whd_created_1".to_owned(),
            event_id: "evt_created_1".to_owned(),
            merchant_id: shop.clone(),
            url: HOOK_URL.to_owned(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at_ms: with_hook.created_at_ms,
            last_status_code: None,
            last_error: None,
            created_at_ms: with_hook.created_at_ms,
            delivered_at_ms: None,
        }]
    );
    assert_eq!(
        deliveries_of(store, &shop, Some("evt_created_2"), 10).await,
        [],
        "an event without a delivery schedules none"
    );
    assert_eq!(
        event_ids(&events_of(store, &shop, None, 10).await),
        ["evt_created_2", "evt_created_1"],
        "newest first"
    );
    assert_eq!(
        event_ids(&events_of(store, &shop, None, 1).await),
        ["evt_created_2"]
    );
    assert_eq!(events_of(store, &other, None, 10).await, []);
    assert_eq!(deliveries_of(store, &other, None, 10).await, []);
    assert_eq!(deliveries_of(store, &shop, None, 10).await.len(), 1);
}

async fn a_duplicate_nonce_is_a_conflict_and_writes_nothing(store: &dyn Store) {
    let shop = add_merchant(store, "nonce").await;
    let other = add_merchant(store, "nonceother").await;
    insert(store, new_order(&shop, 1)).await;

    let mut duplicate = new_order(&shop, 2);
    duplicate.nonce = 1;
    assert!(
        matches!(
            store.insert_order(duplicate).await,
            Err(StoreError::Conflict(Constraint::Nonce))
        ),
        "same merchant, same nonce"
    );
    assert!(matches!(
        store.order(&order_id(2)).await,
        Err(StoreError::NotFound("payment order"))
    ));
    assert!(matches!(
        store.event("evt_created_2").await,
        Err(StoreError::NotFound("event"))
    ));
    assert_eq!(
        event_ids(&events_of(store, &shop, None, 10).await),
        ["evt_created_1"]
    );
    assert_eq!(deliveries_of(store, &shop, None, 10).await.len(), 1);

    let mut theirs = new_order(&other, 3);
    theirs.nonce = 1;
    let theirs = store
        .insert_order(theirs)
        .await
        .expect("another merchant's nonce");
    assert_eq!((theirs.nonce, &theirs.merchant_id), (1, &other));
}

async fn a_duplicate_idempotency_key_is_a_conflict_and_the_key_finds_the_order(store: &dyn Store) {
    let shop = add_merchant(store, "idem").await;
    let other = add_merchant(store, "idemother").await;
    let mut first = new_order(&shop, 1);
    first.idempotency_key = Some("key-1".to_owned());
    first.request_hash = Some("hash-1".to_owned());
    let first = insert(store, first).await;

    let mut again = new_order(&shop, 2);
    again.idempotency_key = Some("key-1".to_owned());
    assert!(matches!(
        store.insert_order(again).await,
        Err(StoreError::Conflict(Constraint::IdempotencyKey))
    ));
    assert_eq!(
        store
            .order_by_idempotency_key(&shop, "key-1")
            .await
            .expect("lookup"),
        Some(first.clone())
    );
    assert_eq!(
        store
            .order_by_idempotency_key(&shop, "key-2")
            .await
            .expect("lookup"),
        None
    );
    assert_eq!(
        store
            .order_by_idempotency_key(&other, "key-1")
            .await
            .expect("lookup"),
        None
    );

    let mut theirs = new_order(&other, 3);
    theirs.idempotency_key = Some("key-1".to_owned());
    let theirs = store
        .insert_order(theirs)
        .await
        .expect("another merchant's key");
    assert_eq!(
        store
            .order_by_idempotency_key(&other, "key-1")
            .await
            .expect("lookup"),
        Some(theirs)
    );

    // Orders without a key never collide on it.
    store
        .insert_order(new_order(&shop, 4))
        .await
        .expect("no key");
    store
        .insert_order(new_order(&shop, 5))
        .await
        .expect("no key");
    assert_eq!(
        store
            .order_by_idempotency_key(&shop, "key-1")
            .await
            .expect("lookup"),
        Some(first)
    );
}

async fn a_receiving_address_is_used_once_per_chain(store: &dyn Store) {
    let shop = add_merchant(store, "address").await;
    let other = add_merchant(store, "addressother").await;
    let first = insert(store, new_order(&shop, 1)).await;

    let mut same_chain = new_order(&other, 2);
    same_chain.receiving_address = first.receiving_address.clone();
    assert!(matches!(
        store.insert_order(same_chain).await,
        Err(StoreError::Conflict(Constraint::ReceivingAddress))
    ));

    let mut other_chain = new_order(&shop, 3);
    other_chain.receiving_address = first.receiving_address.clone();
    other_chain.chain_id = 137;
    other_chain.blockchain = "polygon".to_owned();
    store
        .insert_order(other_chain)
        .await
        .expect("another chain");

    let mut same_id = new_order(&shop, 4);
    same_id.order_id = first.order_id.clone();
    assert!(matches!(
        store.insert_order(same_id).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.order(&first.order_id).await.expect("read"), first);
    assert_eq!(store.list_orders(&query(&shop)).await.expect("list").1, 2);
}

async fn one_of_ten_concurrent_orders_with_one_nonce_wins(store: Arc<dyn Store>) {
    let shop = add_merchant(&*store, "race").await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..10 {
        let store = Arc::clone(&store);
        let mut order = new_order(&shop, 100 + n);
        order.nonce = 7;
        tasks.spawn(async move { store.insert_order(order).await });
    }
    let results = tasks.join_all().await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    for result in &results {
        assert!(
            matches!(result, Ok(_) | Err(StoreError::Conflict(Constraint::Nonce))),
            "{result:?}"
        );
    }
    let (orders, total) = store.list_orders(&query(&shop)).await.expect("list");
    assert_eq!((orders.len(), total), (1, 1));
    assert_eq!(orders[0].nonce, 7);
    assert_eq!(events_of(&*store, &shop, None, 100).await.len(), 1);
    assert_eq!(deliveries_of(&*store, &shop, None, 100).await.len(), 1);
}

/// Inserts orders `numbers` of `shop` all at once; `change` adjusts each first.
async fn insert_at_once(
    store: &Arc<dyn Store>,
    shop: &MerchantId,
    numbers: std::ops::Range<u32>,
    change: fn(u32, &mut NewOrder),
) -> Vec<(u32, Result<OrderRow, StoreError>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for n in numbers {
        let store = Arc::clone(store);
        let mut order = new_order(shop, n);
        change(n, &mut order);
        tasks.spawn(async move { (n, store.insert_order(order).await) });
    }
    tasks.join_all().await
}

/// Many orders at once (on SQLite they are written together): each is written exactly once
/// with its event and delivery, and the ones that cannot be written fail alone with their
/// precise reason — a repeated nonce, a repeated idempotency key, an unknown merchant.
async fn orders_arriving_together_are_each_written_once_or_fail_alone(store: Arc<dyn Store>) {
    let shop = add_merchant(&*store, "crowd").await;
    // Six orders share nonce 9999 and six share one idempotency key: one of each wins.
    let results = insert_at_once(&store, &shop, 200..260, |n, order| match n % 10 {
        3 => order.nonce = 9_999,
        5 => order.idempotency_key = Some("same-key".to_owned()),
        _ => {}
    })
    .await;
    // Then ten more, two of them for a merchant that does not exist.
    let results = results.into_iter().chain(
        insert_at_once(&store, &shop, 300..310, |n, order| {
            if n % 5 == 2 {
                let stranger = MerchantId::from_suffix("nobody").expect("valid id");
                order.merchant_id = stranger.clone();
                order.event.merchant_id = stranger;
            }
        })
        .await,
    );
    let mut written = Vec::new();
    let (mut nonce_conflicts, mut key_conflicts, mut strangers) = (0, 0, 0);
    for (n, result) in results {
        match result {
            Ok(row) => {
                assert_eq!(row.order_id, order_id(n));
                assert_eq!(row.status, OrderStatus::Pending);
                written.push(order_id(n));
            }
            Err(StoreError::Conflict(Constraint::Nonce)) if n < 300 && n % 10 == 3 => {
                nonce_conflicts += 1
            }
            Err(StoreError::Conflict(Constraint::IdempotencyKey)) if n < 300 && n % 10 == 5 => {
                key_conflicts += 1;
            }
            Err(_) if n >= 300 && n % 5 == 2 => strangers += 1,
            Err(error) => panic!("order {n} failed: {error}"),
        }
    }
    assert_eq!((nonce_conflicts, key_conflicts, strangers), (5, 5, 2));
    written.sort();
    assert_eq!(written.len(), 60 - 5 - 5 + 10 - 2);
    let (orders, total) = store.list_orders(&query(&shop)).await.expect("list");
    assert_eq!(total, 58);
    let mut listed = ids(&orders);
    listed.sort();
    assert_eq!(listed, written);
    // Exactly one creation event and one delivery per written order.
    let events = events_of(&*store, &shop, None, 100).await;
    let mut evented: Vec<String> = events.iter().filter_map(|e| e.order_id.clone()).collect();
    evented.sort();
    assert_eq!(evented, written);
    assert_eq!(deliveries_of(&*store, &shop, None, 100).await.len(), 58);
}

// ---------------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------------

/// Seven orders of one merchant (and one of another), returning the merchant.
///
/// | order | chain | currency | decimals | human amount | status     |
/// |-------|-------|----------|----------|--------------|------------|
/// | 1     | 1     | USDC     | 6        | 1.5          | pending    |
/// | 2     | 1     | USDT     | 18       | 2            | processing |
/// | 3     | 137   | USDC     | 6        | 250          | confirmed  |
/// | 4     | 137   | POL      | 18       | 0.1          | expired    |
/// | 5     | 1     | ETH      | 18       | 0.05         | pending    |
/// | 6     | 8453  | USDC     | 6        | 20           | failed     |
/// | 7     | 1     | USDC     | 6        | 0.999999     | pending    |
async fn seven_orders(store: &dyn Store) -> MerchantId {
    let shop = add_merchant(store, "listing").await;
    let other = add_merchant(store, "listingother").await;
    // (chain id, currency, token contract, decimals, base units, status)
    type Spec = (
        u64,
        &'static str,
        Option<&'static str>,
        u8,
        u64,
        OrderStatus,
    );
    let specs: [Spec; 7] = [
        (1, "USDC", Some(USDC), 6, 1_500_000, OrderStatus::Pending),
        (
            1,
            "USDT",
            Some(USDT),
            18,
            2_000_000_000_000_000_000,
            OrderStatus::Processing,
        ),
        (
            137,
            "USDC",
            Some(USDC),
            6,
            250_000_000,
            OrderStatus::Confirmed,
        ),
        (
            137,
            "POL",
            None,
            18,
            100_000_000_000_000_000,
            OrderStatus::Expired,
        ),
        (
            1,
            "ETH",
            None,
            18,
            50_000_000_000_000_000,
            OrderStatus::Pending,
        ),
        (8453, "USDC", Some(USDC), 6, 20_000_000, OrderStatus::Failed),
        (1, "USDC", Some(USDC), 6, 999_999, OrderStatus::Pending),
    ];
    for (n, (chain_id, currency, asset, decimals, amount, status)) in (1..).zip(specs) {
        let mut new = new_order(&shop, n);
        new.chain_id = chain_id;
        new.currency = currency.to_owned();
        new.asset_address = asset.map(str::to_owned);
        new.decimals = decimals;
        new.amount = Amount::from(amount);
        let row = insert(store, new).await;
        if status != OrderStatus::Pending {
            store
                .update_orders(&[update(&row, status, T0 + HOUR)])
                .await
                .expect("update");
        }
    }
    // Another merchant's order, newer and larger than all: never listed.
    let mut foreign = new_order(&other, 50);
    foreign.amount = Amount::from(1_000_000_000_000);
    insert(store, foreign).await;
    shop
}

fn names(numbers: &[u32]) -> Vec<String> {
    numbers.iter().map(|&n| order_id(n)).collect()
}

async fn listing_filters_by_status_chain_and_currency_and_counts(store: &dyn Store) {
    let shop = seven_orders(store).await;
    let all = query(&shop);
    assert_eq!(
        listed(store, &all).await,
        (names(&[7, 6, 5, 4, 3, 2, 1]), 7)
    );

    let pending = OrderQuery {
        status: Some(OrderStatus::Pending),
        ..all.clone()
    };
    assert_eq!(listed(store, &pending).await, (names(&[7, 5, 1]), 3));
    for (status, number) in [
        (OrderStatus::Processing, 2),
        (OrderStatus::Confirmed, 3),
        (OrderStatus::Expired, 4),
        (OrderStatus::Failed, 6),
    ] {
        let only = OrderQuery {
            status: Some(status),
            ..all.clone()
        };
        assert_eq!(
            listed(store, &only).await,
            (names(&[number]), 1),
            "{status}"
        );
    }

    let ethereum = OrderQuery {
        chain_id: Some(1),
        ..all.clone()
    };
    assert_eq!(listed(store, &ethereum).await, (names(&[7, 5, 2, 1]), 4));
    let usdc = OrderQuery {
        currency: Some("USDC".to_owned()),
        ..all.clone()
    };
    assert_eq!(listed(store, &usdc).await, (names(&[7, 6, 3, 1]), 4));
    let usdc_on_ethereum = OrderQuery {
        chain_id: Some(1),
        currency: Some("USDC".to_owned()),
        ..all.clone()
    };
    assert_eq!(listed(store, &usdc_on_ethereum).await, (names(&[7, 1]), 2));
    let pending_usdc_on_ethereum = OrderQuery {
        status: Some(OrderStatus::Pending),
        ..usdc_on_ethereum.clone()
    };
    assert_eq!(
        listed(store, &pending_usdc_on_ethereum).await,
        (names(&[7, 1]), 2)
    );
    let nothing = OrderQuery {
        status: Some(OrderStatus::Pending),
        chain_id: Some(137),
        ..all.clone()
    };
    assert_eq!(listed(store, &nothing).await, (vec![], 0));
    let unknown_chain = OrderQuery {
        chain_id: Some(10),
        ..all.clone()
    };
    assert_eq!(listed(store, &unknown_chain).await, (vec![], 0));
    let stranger = query(&MerchantId::from_suffix("stranger").expect("id"));
    assert_eq!(listed(store, &stranger).await, (vec![], 0));
}

async fn listing_pages_with_limit_and_offset_and_keeps_the_total(store: &dyn Store) {
    let shop = seven_orders(store).await;
    let page = |offset, limit| OrderQuery {
        offset,
        limit,
        ..query(&shop)
    };
    assert_eq!(listed(store, &page(0, 3)).await, (names(&[7, 6, 5]), 7));
    assert_eq!(listed(store, &page(3, 3)).await, (names(&[4, 3, 2]), 7));
    assert_eq!(listed(store, &page(6, 3)).await, (names(&[1]), 7));
    assert_eq!(listed(store, &page(7, 3)).await, (vec![], 7));
    assert_eq!(listed(store, &page(2, 1)).await, (names(&[5]), 7));
    let filtered = OrderQuery {
        chain_id: Some(1),
        offset: 1,
        limit: 2,
        ..query(&shop)
    };
    assert_eq!(listed(store, &filtered).await, (names(&[5, 2]), 4));
}

async fn listing_sorts_by_time_human_amount_and_status(store: &dyn Store) {
    let shop = seven_orders(store).await;
    let sorted = |ordering| OrderQuery {
        ordering,
        ..query(&shop)
    };
    assert_eq!(
        listed(store, &sorted(OrderOrdering::NewestFirst)).await.0,
        names(&[7, 6, 5, 4, 3, 2, 1])
    );
    assert_eq!(
        listed(store, &sorted(OrderOrdering::OldestFirst)).await.0,
        names(&[1, 2, 3, 4, 5, 6, 7])
    );
    // Human values: 0.05 ETH < 0.1 POL < 0.999999 USDC < 1.5 USDC < 2 USDT < 20 USDC < 250 USDC,
    // although in base units the 18-decimal amounts are by far the largest.
    assert_eq!(
        listed(store, &sorted(OrderOrdering::AmountAscending))
            .await
            .0,
        names(&[5, 4, 7, 1, 2, 6, 3])
    );
    assert_eq!(
        listed(store, &sorted(OrderOrdering::AmountDescending))
            .await
            .0,
        names(&[3, 6, 2, 1, 7, 4, 5])
    );

    let statuses =
        |orders: Vec<OrderRow>| orders.iter().map(|o| o.status.as_str()).collect::<Vec<_>>();
    let (ascending, total) = store
        .list_orders(&sorted(OrderOrdering::StatusAscending))
        .await
        .expect("list");
    assert_eq!(total, 7);
    assert_eq!(
        statuses(ascending),
        [
            "confirmed",
            "expired",
            "failed",
            "pending",
            "pending",
            "pending",
            "processing"
        ]
    );
    let (descending, _) = store
        .list_orders(&sorted(OrderOrdering::StatusDescending))
        .await
        .expect("list");
    assert_eq!(
        statuses(descending),
        [
            "processing",
            "pending",
            "pending",
            "pending",
            "failed",
            "expired",
            "confirmed"
        ]
    );

    // Sorting applies before paging.
    let cheapest_two = OrderQuery {
        limit: 2,
        ..sorted(OrderOrdering::AmountAscending)
    };
    assert_eq!(listed(store, &cheapest_two).await, (names(&[5, 4]), 7));
    let next_two = OrderQuery {
        offset: 2,
        ..cheapest_two
    };
    assert_eq!(listed(store, &next_two).await, (names(&[7, 1]), 7));
}

// ---------------------------------------------------------------------------------------------
// Updates
// ---------------------------------------------------------------------------------------------

async fn an_update_applies_its_state_and_events_and_bumps_the_version(store: &dyn Store) {
    let shop = add_merchant(store, "updates").await;
    let order = insert(store, new_order(&shop, 1)).await;
    let processing = OrderUpdate {
        sub_status: PaymentSubStatus::Overpaid,
        amount_paid: Amount::from(1_200_000),
        events: vec![event(
            &order,
            "evt_processing",
            "payment_order.processing",
            T0 + 100 * SECOND,
            Some("whd_processing"),
        )],
        ..update(&order, OrderStatus::Processing, T0 + 100 * SECOND)
    };
    store.update_orders(&[processing]).await.expect("update");
    let read = store.order(&order.order_id).await.expect("read");
    assert_eq!(
        read,
        OrderRow {
            status: OrderStatus::Processing,
            sub_status: PaymentSubStatus::Overpaid,
            amount_paid: Amount::from(1_200_000),
            updated_at_ms: T0 + 100 * SECOND,
            version: 1,
            ..order.clone()
        }
    );

    let confirmed = OrderUpdate {
        confirmed_at_ms: Some(T0 + 200 * SECOND),
        events: vec![event(
            &read,
            "evt_confirmed",
            "payment_order.confirmed",
            T0 + 200 * SECOND,
            None,
        )],
        ..update(&read, OrderStatus::Confirmed, T0 + 200 * SECOND)
    };
    store.update_orders(&[confirmed]).await.expect("update");
    let read = store.order(&order.order_id).await.expect("read");
    assert_eq!(
        (
            read.status,
            read.sub_status,
            read.confirmed_at_ms,
            read.version
        ),
        (
            OrderStatus::Confirmed,
            PaymentSubStatus::Overpaid,
            Some(T0 + 200 * SECOND),
            2
        )
    );

    let closed = OrderUpdate {
        closed: true,
        sub_status: PaymentSubStatus::None,
        confirmed_at_ms: None,
        ..update(&read, OrderStatus::Failed, T0 + 300 * SECOND)
    };
    store.update_orders(&[closed]).await.expect("update");
    let read = store.order(&order.order_id).await.expect("read");
    assert_eq!(
        (
            read.status,
            read.sub_status,
            read.confirmed_at_ms,
            read.closed,
            read.updated_at_ms,
            read.version
        ),
        (
            OrderStatus::Failed,
            PaymentSubStatus::None,
            None,
            true,
            T0 + 300 * SECOND,
            3
        )
    );

    assert_eq!(
        event_ids(&events_of(store, &shop, Some(&order.order_id), 10).await),
        ["evt_confirmed", "evt_processing", "evt_created_1"]
    );
    let processing_deliveries = deliveries_of(store, &shop, Some("evt_processing"), 10).await;
    assert_eq!(processing_deliveries.len(), 1);
    assert_eq!(
        (
            processing_deliveries[0].delivery_id.as_str(),
            processing_deliveries[0].status,
            processing_deliveries[0].next_attempt_at_ms
        ),
        ("whd_processing", DeliveryStatus::Pending, T0 + 100 * SECOND)
    );
    assert_eq!(
        deliveries_of(store, &shop, Some("evt_confirmed"), 10).await,
        []
    );
}

async fn a_stale_version_applies_nothing_from_its_batch(store: &dyn Store) {
    let shop = add_merchant(store, "stale").await;
    let first = insert(store, new_order(&shop, 1)).await;
    let second = insert(store, new_order(&shop, 2)).await;
    store
        .update_orders(&[update(&second, OrderStatus::Processing, T0 + HOUR)])
        .await
        .expect("move the second on");
    let second_now = store.order(&second.order_id).await.expect("read");
    assert_eq!(second_now.version, 1);

    let fresh = OrderUpdate {
        amount_paid: Amount::from(1_000_000),
        events: vec![event(
            &first,
            "evt_first_processing",
            "payment_order.processing",
            T0 + 2 * HOUR,
            Some("whd_first_processing"),
        )],
        ..update(&first, OrderStatus::Processing, T0 + 2 * HOUR)
    };
    let stale = OrderUpdate {
        events: vec![event(
            &second,
            "evt_second_confirmed",
            "payment_order.confirmed",
            T0 + 2 * HOUR,
            Some("whd_second_confirmed"),
        )],
        ..update(&second, OrderStatus::Confirmed, T0 + 2 * HOUR)
    };
    assert_eq!(stale.expected_version, 0);
    let events_before = events_of(store, &shop, None, 100).await;
    let deliveries_before = deliveries_of(store, &shop, None, 100).await;
    for batch in [
        vec![fresh.clone(), stale.clone()],
        vec![stale.clone(), fresh.clone()],
    ] {
        assert!(matches!(
            store.update_orders(&batch).await,
            Err(StoreError::Conflict(Constraint::PaymentOrderVersion))
        ));
        assert_eq!(store.order(&first.order_id).await.expect("read"), first);
        assert_eq!(
            store.order(&second.order_id).await.expect("read"),
            second_now
        );
        assert_eq!(events_of(store, &shop, None, 100).await, events_before);
        assert_eq!(
            deliveries_of(store, &shop, None, 100).await,
            deliveries_before
        );
        assert!(matches!(
            store.event("evt_first_processing").await,
            Err(StoreError::NotFound("event"))
        ));
    }

    // With the version re-read, the same change goes through.
    let retried = OrderUpdate {
        expected_version: second_now.version,
        ..stale
    };
    store.update_orders(&[fresh, retried]).await.expect("retry");
    assert_eq!(
        store.order(&first.order_id).await.expect("read").status,
        OrderStatus::Processing
    );
    let second_after = store.order(&second.order_id).await.expect("read");
    assert_eq!(
        (second_after.status, second_after.version),
        (OrderStatus::Confirmed, 2)
    );
    assert_eq!(events_of(store, &shop, None, 100).await.len(), 4);
}

// ---------------------------------------------------------------------------------------------
// Chain steps
// ---------------------------------------------------------------------------------------------

async fn a_chain_step_moves_the_cursor_stores_payments_and_updates_orders(store: &dyn Store) {
    let shop = add_merchant(store, "watcher").await;
    let order = insert(store, new_order(&shop, 1)).await;
    assert_eq!(store.chain_cursor(1).await.expect("cursor"), None);

    let blocks = consecutive(100..=102, 'a');
    let first = payment(&order, 1, 3, 600_000, &blocks[1]);
    let second = payment(&order, 2, 0, 600_000, &blocks[2]);
    let paid = OrderUpdate {
        sub_status: PaymentSubStatus::Overpaid,
        amount_paid: Amount::from(1_200_000),
        events: vec![event(
            &order,
            "evt_paid",
            "payment_order.processing",
            T0 + 10 * SECOND,
            Some("whd_paid"),
        )],
        ..update(&order, OrderStatus::Processing, T0 + 10 * SECOND)
    };
    store
        .commit_chain_step(&step(
            1,
            blocks.clone(),
            vec![first.clone(), second.clone()],
            vec![paid],
        ))
        .await
        .expect("step");

    assert_eq!(
        store.chain_cursor(1).await.expect("cursor"),
        Some(ChainBlock {
            number: 102,
            hash: block_hash(102, 'a'),
            parent_hash: block_hash(101, 'a'),
        })
    );
    assert_eq!(store.chain_cursor(137).await.expect("cursor"), None);
    for block in &blocks {
        assert_eq!(
            chain_block(store, 1, block.number).await.as_ref(),
            Some(block)
        );
    }
    assert_eq!(chain_block(store, 1, 103).await, None);
    assert_eq!(chain_block(store, 137, 101).await, None);
    assert_eq!(
        payments_of(store, &order).await,
        [stored(&first, false), stored(&second, false)]
    );
    assert_eq!(
        store
            .payments_for_order("ORD-missing")
            .await
            .expect("payments"),
        []
    );
    let read = store.order(&order.order_id).await.expect("read");
    assert_eq!(
        (read.status, read.sub_status, read.amount_paid, read.version),
        (
            OrderStatus::Processing,
            PaymentSubStatus::Overpaid,
            Amount::from(1_200_000),
            1
        )
    );
    assert_eq!(
        event_ids(&events_of(store, &shop, Some(&order.order_id), 10).await),
        ["evt_paid", "evt_created_1"]
    );
    assert_eq!(
        deliveries_of(store, &shop, Some("evt_paid"), 10)
            .await
            .len(),
        1
    );

    // A step without payments or updates just moves the cursor on.
    store
        .commit_chain_step(&step(1, vec![block(103, 'a', 'a')], vec![], vec![]))
        .await
        .expect("step");
    assert_eq!(
        store
            .chain_cursor(1)
            .await
            .expect("cursor")
            .map(|c| (c.number, c.parent_hash)),
        Some((103, block_hash(102, 'a')))
    );

    // A block processed again is kept as last seen.
    let replaced = block(103, 'b', 'a');
    store
        .commit_chain_step(&step(1, vec![replaced.clone()], vec![], vec![]))
        .await
        .expect("step");
    assert_eq!(chain_block(store, 1, 103).await, Some(replaced.clone()));
    assert_eq!(store.chain_cursor(1).await.expect("cursor"), Some(replaced));
}

async fn replaying_payments_does_not_duplicate_them(store: &dyn Store) {
    let shop = add_merchant(store, "replay").await;
    let order = insert(store, new_order(&shop, 1)).await;
    let at = block(100, 'a', 'a');
    let first = payment(&order, 1, 3, 400_000, &at);
    let native = NewPayment {
        asset_address: None,
        ..payment(&order, 2, -1, 100_000, &at)
    };
    store
        .commit_chain_step(&step(
            1,
            vec![at.clone()],
            vec![first.clone(), native.clone()],
            vec![],
        ))
        .await
        .expect("step");
    // The same payments again, e.g. after a restart re-scanned the block.
    store
        .commit_chain_step(&step(
            1,
            vec![at.clone(), block(101, 'a', 'a')],
            vec![first.clone(), native.clone(), first.clone()],
            vec![],
        ))
        .await
        .expect("replay");
    assert_eq!(
        payments_of(store, &order).await,
        [stored(&native, false), stored(&first, false)]
    );

    // Another log of the same transaction is another payment.
    let second_log = payment(&order, 1, 4, 50_000, &at);
    store
        .commit_chain_step(&step(
            1,
            vec![block(102, 'a', 'a')],
            vec![second_log.clone()],
            vec![],
        ))
        .await
        .expect("step");
    assert_eq!(
        payments_of(store, &order).await,
        [
            stored(&native, false),
            stored(&first, false),
            stored(&second_log, false)
        ]
    );
    assert_eq!(
        store
            .chain_cursor(1)
            .await
            .expect("cursor")
            .map(|c| c.number),
        Some(102)
    );
}

async fn a_rewind_orphans_later_payments_and_a_new_block_restores_them(store: &dyn Store) {
    let shop = add_merchant(store, "reorg").await;
    let order = insert(store, new_order(&shop, 1)).await;
    let mut polygon_new = new_order(&shop, 2);
    polygon_new.chain_id = 137;
    let polygon = insert(store, polygon_new).await;

    let main = consecutive(100..=102, 'a');
    let early = payment(&order, 1, 0, 300_000, &main[0]);
    let middle = payment(&order, 2, 0, 300_000, &main[1]);
    let late = payment(&order, 3, 0, 300_000, &main[2]);
    store
        .commit_chain_step(&step(
            1,
            main.clone(),
            vec![early.clone(), middle.clone(), late.clone()],
            vec![],
        ))
        .await
        .expect("step");
    // Another chain at higher block numbers is untouched by this chain's reorg.
    let polygon_block = block(150, 'a', 'a');
    let polygon_payment = payment(&polygon, 9, 0, 1_000_000, &polygon_block);
    store
        .commit_chain_step(&step(
            137,
            vec![polygon_block.clone()],
            vec![polygon_payment.clone()],
            vec![],
        ))
        .await
        .expect("polygon step");

    // Reorg: block 101 and 102 are replaced; `middle` made it into the new 101, `late` did not.
    let fork_101 = block(101, 'b', 'a');
    let middle_again = NewPayment {
        block_hash: fork_101.hash.clone(),
        ..middle.clone()
    };
    let rewind = ChainStep {
        rewind_to: Some(100),
        orphans: vec![OrphanedPayment::of(&middle), OrphanedPayment::of(&late)],
        ..step(
            1,
            vec![fork_101.clone()],
            vec![middle_again.clone()],
            vec![],
        )
    };
    store.commit_chain_step(&rewind).await.expect("rewind");

    assert_eq!(
        payments_of(store, &order).await,
        [
            stored(&early, false),
            stored(&middle_again, false),
            stored(&late, true)
        ]
    );
    assert_eq!(chain_block(store, 1, 100).await, Some(main[0].clone()));
    assert_eq!(chain_block(store, 1, 101).await, Some(fork_101.clone()));
    assert_eq!(chain_block(store, 1, 102).await, None, "forgotten");
    assert_eq!(
        store.chain_cursor(1).await.expect("cursor"),
        Some(fork_101.clone())
    );
    assert_eq!(
        payments_of(store, &polygon).await,
        [stored(&polygon_payment, false)]
    );
    assert_eq!(chain_block(store, 137, 150).await, Some(polygon_block));

    // `late` shows up again in a later block of the new fork.
    let fork = vec![block(102, 'b', 'b'), block(103, 'b', 'b')];
    let late_again = NewPayment {
        block_number: 103,
        block_hash: fork[1].hash.clone(),
        block_time: late.block_time + 12,
        ..late.clone()
    };
    store
        .commit_chain_step(&step(1, fork.clone(), vec![late_again.clone()], vec![]))
        .await
        .expect("step");
    assert_eq!(
        payments_of(store, &order).await,
        [
            stored(&early, false),
            stored(&middle_again, false),
            stored(&late_again, false)
        ]
    );
    assert_eq!(chain_block(store, 1, 102).await, Some(fork[0].clone()));
    assert_eq!(
        store.chain_cursor(1).await.expect("cursor"),
        Some(fork[1].clone())
    );

    // A deeper rewind orphans what it names, restored payments included.
    let deep = ChainStep {
        rewind_to: Some(99),
        orphans: vec![
            OrphanedPayment::of(&early),
            OrphanedPayment::of(&middle_again),
            OrphanedPayment::of(&late_again),
        ],
        ..step(1, vec![block(100, 'c', 'a')], vec![], vec![])
    };
    store.commit_chain_step(&deep).await.expect("deep rewind");
    let orphaned: Vec<bool> = payments_of(store, &order)
        .await
        .iter()
        .map(|p| p.orphaned)
        .collect();
    assert_eq!(orphaned, [true, true, true]);
    for number in 101..=103 {
        assert_eq!(chain_block(store, 1, number).await, None, "block {number}");
    }
}

/// A rewind orphans exactly the payments it names, and only while they still name the block it
/// judged: a payment recorded above the ancestor meanwhile (an x402 sale settling beside the
/// watcher) stays live, and so does a named payment whose row moved to another block.
async fn a_rewind_orphans_only_the_payments_it_names(store: &dyn Store) {
    let shop = add_merchant(store, "named").await;
    let order = insert(store, new_order(&shop, 1)).await;
    let sold = insert(store, new_order(&shop, 2)).await;
    let main = consecutive(100..=101, 'a');
    let dropped = payment(&order, 1, 0, 300_000, &main[1]);
    let moved = payment(&order, 2, 0, 300_000, &main[1]);
    store
        .commit_chain_step(&step(
            1,
            main.clone(),
            vec![dropped.clone(), moved.clone()],
            vec![],
        ))
        .await
        .expect("step");
    // Recorded above the ancestor in a canonical block the watcher has not reached; the rewind
    // was judged before it existed.
    let canonical = block(102, 'b', 'b');
    let recorded_meanwhile = payment(&sold, 3, 0, 1_000_000, &canonical);
    store
        .commit_chain_step(&step(
            1,
            vec![main[1].clone()],
            vec![recorded_meanwhile.clone()],
            vec![],
        ))
        .await
        .expect("step");
    // `moved` was found again in another block after the judgement.
    let moved_again = NewPayment {
        block_number: 102,
        block_hash: canonical.hash.clone(),
        ..moved.clone()
    };
    store
        .commit_chain_step(&step(
            1,
            vec![main[1].clone()],
            vec![moved_again.clone()],
            vec![],
        ))
        .await
        .expect("step");

    let rewind = ChainStep {
        rewind_to: Some(100),
        orphans: vec![OrphanedPayment::of(&dropped), OrphanedPayment::of(&moved)],
        ..step(1, vec![main[0].clone()], vec![], vec![])
    };
    store.commit_chain_step(&rewind).await.expect("rewind");

    assert_eq!(
        payments_of(store, &order).await,
        [stored(&dropped, true), stored(&moved_again, false)]
    );
    assert_eq!(
        payments_of(store, &sold).await,
        [stored(&recorded_meanwhile, false)],
        "not named, so not orphaned, although above the ancestor"
    );
    assert_eq!(chain_block(store, 1, 101).await, None);
    assert_eq!(
        store.chain_cursor(1).await.expect("cursor"),
        Some(main[0].clone())
    );
}

/// A sale mined again may land on the log index another order's payment had in the dropped
/// block: that orphaned row becomes the new payment's, whole. A live payment of another order
/// is never taken over.
async fn a_restored_payment_takes_over_an_orphaned_row_and_never_a_live_one(store: &dyn Store) {
    let shop = add_merchant(store, "takeover").await;
    let first = insert(store, new_order(&shop, 1)).await;
    let second = insert(store, new_order(&shop, 2)).await;
    let main = consecutive(100..=101, 'a');
    // One transaction paying both orders: logs 1 and 3.
    let first_paid = payment(&first, 7, 1, 1_000_000, &main[1]);
    let second_paid = NewPayment {
        sender: "0x00000000000000000000000000000000000000bb".to_owned(),
        ..payment(&second, 7, 3, 900_000, &main[1])
    };
    store
        .commit_chain_step(&step(
            1,
            main.clone(),
            vec![first_paid.clone(), second_paid.clone()],
            vec![],
        ))
        .await
        .expect("step");

    // Mined again two logs later: the first order's transfer now sits at log 3.
    let fork = block(101, 'b', 'a');
    let first_again = NewPayment {
        log_index: 3,
        block_hash: fork.hash.clone(),
        detected_at_ms: T0 + 20 * SECOND,
        ..first_paid.clone()
    };
    let second_again = NewPayment {
        log_index: 5,
        block_hash: fork.hash.clone(),
        detected_at_ms: T0 + 20 * SECOND,
        ..second_paid.clone()
    };
    let rewind = ChainStep {
        rewind_to: Some(100),
        orphans: vec![
            OrphanedPayment::of(&first_paid),
            OrphanedPayment::of(&second_paid),
        ],
        ..step(
            1,
            vec![fork.clone()],
            vec![first_again.clone(), second_again.clone()],
            vec![],
        )
    };
    store.commit_chain_step(&rewind).await.expect("rewind");
    assert_eq!(
        payments_of(store, &first).await,
        [stored(&first_paid, true), stored(&first_again, false)]
    );
    assert_eq!(
        payments_of(store, &second).await,
        [stored(&second_again, false)],
        "its orphaned row at log 3 is the first order's now"
    );

    // A payment of another order at a live payment's key changes nothing.
    let intruder = NewPayment {
        order_id: second.order_id.clone(),
        sender: "0x00000000000000000000000000000000000000cc".to_owned(),
        ..first_again.clone()
    };
    store
        .commit_chain_step(&step(1, vec![block(102, 'b', 'b')], vec![intruder], vec![]))
        .await
        .expect("step");
    assert_eq!(
        payments_of(store, &first).await,
        [stored(&first_paid, true), stored(&first_again, false)]
    );
    assert_eq!(
        payments_of(store, &second).await,
        [stored(&second_again, false)]
    );
}

async fn blocks_behind_the_kept_window_are_pruned(store: &dyn Store) {
    let blocks = consecutive(10..=15, 'a');
    let pruning = ChainStep {
        keep_blocks: 2,
        ..step(1, blocks.clone(), vec![], vec![])
    };
    store.commit_chain_step(&pruning).await.expect("step");
    for number in 10..=12 {
        assert_eq!(chain_block(store, 1, number).await, None, "block {number}");
    }
    for block in &blocks[3..] {
        assert_eq!(
            chain_block(store, 1, block.number).await.as_ref(),
            Some(block)
        );
    }
    assert_eq!(
        store.chain_cursor(1).await.expect("cursor"),
        Some(blocks[5].clone())
    );

    // Pruning follows the cursor and stays on its chain.
    let low = consecutive(1..=5, 'a');
    let early_chain = ChainStep {
        keep_blocks: 100,
        ..step(137, low.clone(), vec![], vec![])
    };
    store.commit_chain_step(&early_chain).await.expect("step");
    for block in &low {
        assert_eq!(
            chain_block(store, 137, block.number).await.as_ref(),
            Some(block)
        );
    }
    let later = ChainStep {
        keep_blocks: 2,
        ..step(
            1,
            vec![block(16, 'a', 'a'), block(17, 'a', 'a')],
            vec![],
            vec![],
        )
    };
    store.commit_chain_step(&later).await.expect("step");
    assert_eq!(chain_block(store, 1, 14).await, None);
    assert!(chain_block(store, 1, 15).await.is_some());
    assert!(chain_block(store, 137, 1).await.is_some());
}

async fn a_chain_step_with_a_stale_order_version_changes_nothing(store: &dyn Store) {
    let shop = add_merchant(store, "stalestep").await;
    let order = insert(store, new_order(&shop, 1)).await;
    let blocks = consecutive(100..=101, 'a');
    let first = payment(&order, 1, 0, 400_000, &blocks[1]);
    let underpaid = OrderUpdate {
        sub_status: PaymentSubStatus::Underpaid,
        amount_paid: Amount::from(400_000),
        ..update(&order, OrderStatus::Pending, T0 + 10 * SECOND)
    };
    store
        .commit_chain_step(&step(
            1,
            blocks.clone(),
            vec![first.clone()],
            vec![underpaid],
        ))
        .await
        .expect("step");
    let before = store.order(&order.order_id).await.expect("read");
    assert_eq!(before.version, 1);
    let events_before = events_of(store, &shop, None, 100).await;

    // Computed from the order as first read (version 0): stale.
    let fork = vec![block(101, 'b', 'a'), block(102, 'b', 'b')];
    let second = payment(&order, 2, 0, 700_000, &fork[1]);
    let stale = ChainStep {
        rewind_to: Some(100),
        orphans: vec![OrphanedPayment::of(&first)],
        ..step(
            1,
            fork,
            vec![second],
            vec![OrderUpdate {
                amount_paid: Amount::from(700_000),
                events: vec![event(
                    &order,
                    "evt_stale",
                    "payment_order.processing",
                    T0 + 20 * SECOND,
                    Some("whd_stale"),
                )],
                ..update(&order, OrderStatus::Processing, T0 + 20 * SECOND)
            }],
        )
    };
    assert!(matches!(
        store.commit_chain_step(&stale).await,
        Err(StoreError::Conflict(Constraint::PaymentOrderVersion))
    ));
    assert_eq!(
        store.chain_cursor(1).await.expect("cursor"),
        Some(blocks[1].clone())
    );
    assert_eq!(chain_block(store, 1, 101).await, Some(blocks[1].clone()));
    assert_eq!(chain_block(store, 1, 102).await, None);
    assert_eq!(
        payments_of(store, &order).await,
        [stored(&first, false)],
        "neither the rewind nor the new payment applied"
    );
    assert_eq!(store.order(&order.order_id).await.expect("read"), before);
    assert_eq!(events_of(store, &shop, None, 100).await, events_before);
    assert!(matches!(
        store.event("evt_stale").await,
        Err(StoreError::NotFound("event"))
    ));
    assert_eq!(
        store
            .claim_due_deliveries(T0 + HOUR, 1, 100)
            .await
            .expect("claim")
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Watcher and expirer queries
// ---------------------------------------------------------------------------------------------

async fn watched_orders_are_a_chains_open_orders_still_monitored(store: &dyn Store) {
    let shop = add_merchant(store, "watched").await;
    let insert = async |n: u32, chain_id: u64, monitor_until_ms: i64| {
        let mut new = new_order(&shop, n);
        new.chain_id = chain_id;
        new.monitor_until_ms = monitor_until_ms;
        insert(store, new).await
    };
    let first = insert(1, 1, T0 + 10 * HOUR).await;
    let ended = insert(2, 1, T0 + 5 * HOUR).await;
    let closing = insert(3, 1, T0 + 10 * HOUR).await;
    let polygon = insert(4, 137, T0 + 10 * HOUR).await;
    let last = insert(5, 1, T0 + 10 * HOUR).await;
    store
        .update_orders(&[OrderUpdate {
            closed: true,
            ..update(&closing, OrderStatus::Failed, T0 + HOUR)
        }])
        .await
        .expect("close");

    let now = T0 + 5 * HOUR; // `ended` stops being monitored exactly now
    assert_eq!(
        ids(&store.watched_orders(1, 0, now, 100).await.expect("watched")),
        [first.order_id.clone(), last.order_id.clone()]
    );
    assert_eq!(
        ids(&store
            .watched_orders(1, 0, now - 1, 100)
            .await
            .expect("watched")),
        [
            first.order_id.clone(),
            ended.order_id.clone(),
            last.order_id.clone()
        ]
    );
    assert_eq!(
        ids(&store
            .watched_orders(1, first.id, now, 100)
            .await
            .expect("watched")),
        [last.order_id.as_str()]
    );
    assert_eq!(
        ids(&store.watched_orders(1, 0, now, 1).await.expect("watched")),
        [first.order_id.as_str()]
    );
    assert_eq!(
        store
            .watched_orders(1, last.id, now, 100)
            .await
            .expect("watched"),
        []
    );
    assert_eq!(
        store
            .watched_orders(137, 0, now, 100)
            .await
            .expect("watched"),
        std::slice::from_ref(&polygon)
    );
    assert_eq!(
        store
            .watched_orders(10, 0, now, 100)
            .await
            .expect("watched"),
        []
    );
    assert_eq!(
        store
            .watched_orders(1, 0, T0 + 10 * HOUR, 100)
            .await
            .expect("watched"),
        []
    );
}

async fn orders_in_a_status_are_listed_per_chain(store: &dyn Store) {
    let shop = add_merchant(store, "instatus").await;
    let mut rows = Vec::new();
    for (n, chain_id) in [(1, 1), (2, 1), (3, 137), (4, 1)] {
        let mut new = new_order(&shop, n);
        new.chain_id = chain_id;
        rows.push(insert(store, new).await);
    }
    store
        .update_orders(&[
            update(&rows[1], OrderStatus::Processing, T0 + HOUR),
            update(&rows[2], OrderStatus::Processing, T0 + HOUR),
        ])
        .await
        .expect("update");
    assert_eq!(
        ids(&store
            .orders_in_status(1, OrderStatus::Pending)
            .await
            .expect("query")),
        [rows[0].order_id.clone(), rows[3].order_id.clone()]
    );
    let processing = store
        .orders_in_status(1, OrderStatus::Processing)
        .await
        .expect("query");
    assert_eq!(ids(&processing), [rows[1].order_id.clone()]);
    assert_eq!(
        (processing[0].status, processing[0].version),
        (OrderStatus::Processing, 1)
    );
    assert_eq!(
        ids(&store
            .orders_in_status(137, OrderStatus::Processing)
            .await
            .expect("query")),
        [rows[2].order_id.clone()]
    );
    assert_eq!(
        store
            .orders_in_status(137, OrderStatus::Pending)
            .await
            .expect("query"),
        []
    );
    assert_eq!(
        store
            .orders_in_status(1, OrderStatus::Confirmed)
            .await
            .expect("query"),
        []
    );
}

async fn only_pending_orders_past_their_window_are_due_to_expire(store: &dyn Store) {
    let shop = add_merchant(store, "expiry").await;
    let insert = async |n: u32, chain_id: u64, expires_at_ms: i64| {
        let mut new = new_order(&shop, n);
        new.chain_id = chain_id;
        new.expires_at_ms = expires_at_ms;
        insert(store, new).await
    };
    let earliest = insert(1, 1, T0 + HOUR).await;
    let at_now = insert(2, 1, T0 + 2 * HOUR).await;
    let later = insert(3, 1, T0 + 3 * HOUR).await;
    let paid = insert(4, 1, T0 + HOUR).await;
    let polygon = insert(5, 137, T0 + HOUR + 1).await;
    store
        .update_orders(&[update(
            &paid,
            OrderStatus::Processing,
            T0 + 30 * 60 * SECOND,
        )])
        .await
        .expect("update");

    let now = T0 + 2 * HOUR;
    assert_eq!(
        ids(&store.orders_due_to_expire(now, 100).await.expect("due")),
        [
            earliest.order_id.clone(),
            polygon.order_id.clone(),
            at_now.order_id.clone()
        ]
    );
    assert_eq!(
        ids(&store.orders_due_to_expire(now, 2).await.expect("due")),
        [earliest.order_id.clone(), polygon.order_id.clone()]
    );
    assert_eq!(
        store
            .orders_due_to_expire(T0 + HOUR - 1, 100)
            .await
            .expect("due"),
        []
    );

    store
        .update_orders(&[update(&earliest, OrderStatus::Expired, now)])
        .await
        .expect("expire");
    assert_eq!(
        ids(&store
            .orders_due_to_expire(T0 + 3 * HOUR, 100)
            .await
            .expect("due")),
        [polygon.order_id, at_now.order_id, later.order_id]
    );
}

// ---------------------------------------------------------------------------------------------
// Webhook deliveries
// ---------------------------------------------------------------------------------------------

/// A merchant with orders 1 and 2 (each with a delivery) and order 3 (without).
async fn two_deliveries(store: &dyn Store) -> MerchantId {
    let shop = add_merchant(store, "hooks").await;
    insert(store, new_order(&shop, 1)).await;
    insert(store, new_order(&shop, 2)).await;
    let mut quiet = new_order(&shop, 3);
    quiet.event.delivery = None;
    insert(store, quiet).await;
    shop
}

async fn due_deliveries_are_claimed_once_per_lease_with_their_event_and_secret(store: &dyn Store) {
    let shop = two_deliveries(store).await;
    let now = T0 + 10 * SECOND;
    let lease = 30 * SECOND;
    let mut claimed: Vec<DueDelivery> = store
        .claim_due_deliveries(now, lease, 10)
        .await
        .expect("claim");
    claimed.sort_by(|a, b| a.delivery.delivery_id.cmp(&b.delivery.delivery_id));
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    for (due, n) in claimed.iter().zip([1, 2]) {
        let created = T0 + ms(n);
        assert_eq!(
            due.delivery,
            DeliveryRow {
                delivery_id: format!("whd_created_{n}"),
                event_id: format!("evt_created_{n}"),
                merchant_id: shop.clone(),
                url: HOOK_URL.to_owned(),
                status: DeliveryStatus::Pending,
                attempts: 0,
                next_attempt_at_ms: created,
                last_status_code: None,
                last_error: None,
                created_at_ms: created,
                delivered_at_ms: None,
            }
        );
        assert_eq!(due.event_type, "payment_order.created");
        assert_eq!(
            due.payload,
            format!(r#"{{"order_id":"{}","status":"pending"}}"#, order_id(n))
        );
        assert_eq!(due.event_created_at_ms, created);
        assert_eq!(due.webhook_secret, "whsec_hooks");
    }

    assert_eq!(
        claimed_ids(store, now, lease, 10).await,
        Vec::<String>::new()
    );
    assert_eq!(
        claimed_ids(store, now + lease - 1, lease, 10).await,
        Vec::<String>::new(),
        "still leased"
    );
    assert_eq!(
        claimed_ids(store, now + lease, lease, 10).await,
        ["whd_created_1", "whd_created_2"],
        "the lease ended"
    );
    assert_eq!(
        claimed_ids(store, now + lease + 1, lease, 10).await,
        Vec::<String>::new()
    );
}

async fn deliveries_are_claimed_when_due_and_up_to_the_limit(store: &dyn Store) {
    let shop = two_deliveries(store).await;
    // Not due before the event's creation time.
    assert_eq!(
        claimed_ids(store, T0 + SECOND - 1, HOUR, 10).await,
        Vec::<String>::new()
    );
    assert_eq!(
        claimed_ids(store, T0 + SECOND, HOUR, 10).await,
        ["whd_created_1"]
    );
    insert(store, new_order(&shop, 4)).await;
    // Earliest due first, within the limit.
    assert_eq!(
        claimed_ids(store, T0 + 10 * SECOND, HOUR, 1).await,
        ["whd_created_2"]
    );
    assert_eq!(
        claimed_ids(store, T0 + 10 * SECOND, HOUR, 5).await,
        ["whd_created_4"]
    );
    assert_eq!(
        claimed_ids(store, T0 + 10 * SECOND, HOUR, 5).await,
        Vec::<String>::new()
    );
}

async fn a_delivered_attempt_is_logged_and_never_claimed_again(store: &dyn Store) {
    let shop = two_deliveries(store).await;
    let now = T0 + 10 * SECOND;
    assert_eq!(claimed_ids(store, now, HOUR, 10).await.len(), 2);
    let success = attempt("whd_created_1", now + 50, Some(200), None);
    store
        .record_attempt(&AttemptOutcome {
            attempt: success.clone(),
            status: DeliveryStatus::Delivered,
            next_attempt_at_ms: now + 50,
        })
        .await
        .expect("record");
    let delivered = delivery(store, &shop, "whd_created_1").await;
    assert_eq!(
        (
            delivered.status,
            delivered.attempts,
            delivered.delivered_at_ms,
            delivered.last_status_code,
            delivered.last_error
        ),
        (
            DeliveryStatus::Delivered,
            1,
            Some(now + 50),
            Some(200),
            None
        )
    );
    assert_eq!(
        store
            .delivery_attempts("whd_created_1")
            .await
            .expect("attempts"),
        [success]
    );
    assert_eq!(
        store
            .delivery_attempts("whd_created_2")
            .await
            .expect("attempts"),
        []
    );
    assert_eq!(
        claimed_ids(store, now + 10 * HOUR, HOUR, 10).await,
        ["whd_created_2"],
        "only the undelivered one comes back"
    );
    assert_eq!(
        claimed_ids(store, now + 100 * HOUR, HOUR, 10).await,
        ["whd_created_2"]
    );
}

async fn a_retry_waits_for_its_next_attempt_time(store: &dyn Store) {
    let shop = two_deliveries(store).await;
    let now = T0 + 10 * SECOND;
    assert_eq!(claimed_ids(store, now, HOUR, 10).await.len(), 2);
    let failure = attempt("whd_created_1", now + 100, Some(500), Some("HTTP 500"));
    let retry_at = now + 60 * SECOND;
    store
        .record_attempt(&AttemptOutcome {
            attempt: failure.clone(),
            status: DeliveryStatus::Pending,
            next_attempt_at_ms: retry_at,
        })
        .await
        .expect("record");
    let waiting = delivery(store, &shop, "whd_created_1").await;
    assert_eq!(
        (
            waiting.status,
            waiting.attempts,
            waiting.next_attempt_at_ms,
            waiting.last_status_code,
            waiting.last_error.as_deref(),
            waiting.delivered_at_ms
        ),
        (
            DeliveryStatus::Pending,
            1,
            retry_at,
            Some(500),
            Some("HTTP 500"),
            None
        )
    );

    assert_eq!(
        claimed_ids(store, retry_at - 1, HOUR, 10).await,
        Vec::<String>::new()
    );
    // Recording the attempt ended the first lease, though an hour has not passed.
    let due = store
        .claim_due_deliveries(retry_at, HOUR, 10)
        .await
        .expect("claim");
    assert_eq!(due.len(), 1);
    assert_eq!(
        (
            due[0].delivery.delivery_id.as_str(),
            due[0].delivery.attempts
        ),
        ("whd_created_1", 1)
    );

    let timeout = attempt("whd_created_1", retry_at + 5, None, Some("timed out"));
    store
        .record_attempt(&AttemptOutcome {
            attempt: timeout.clone(),
            status: DeliveryStatus::Pending,
            next_attempt_at_ms: retry_at + HOUR,
        })
        .await
        .expect("record");
    let waiting = delivery(store, &shop, "whd_created_1").await;
    assert_eq!(
        (
            waiting.attempts,
            waiting.last_status_code,
            waiting.last_error.as_deref()
        ),
        (2, None, Some("timed out"))
    );
    assert_eq!(
        store
            .delivery_attempts("whd_created_1")
            .await
            .expect("attempts"),
        [failure, timeout],
        "oldest first"
    );
}

async fn a_failed_delivery_is_never_claimed_again(store: &dyn Store) {
    let shop = two_deliveries(store).await;
    let now = T0 + 10 * SECOND;
    assert_eq!(claimed_ids(store, now, SECOND, 10).await.len(), 2);
    store
        .record_attempt(&AttemptOutcome {
            attempt: attempt("whd_created_2", now + 10, Some(410), Some("HTTP 410")),
            status: DeliveryStatus::Failed,
            next_attempt_at_ms: now + 10,
        })
        .await
        .expect("record");
    let failed = delivery(store, &shop, "whd_created_2").await;
    assert_eq!(
        (
            failed.status,
            failed.attempts,
            failed.delivered_at_ms,
            failed.last_status_code
        ),
        (DeliveryStatus::Failed, 1, None, Some(410))
    );
    for later in [now + SECOND, now + HOUR, now + 1_000 * HOUR] {
        let claimed = claimed_ids(store, later, SECOND, 10).await;
        assert!(
            !claimed.contains(&"whd_created_2".to_owned()),
            "{later}: {claimed:?}"
        );
    }
}

async fn a_redelivery_is_scheduled_for_an_existing_event_and_claimable(store: &dyn Store) {
    let shop = two_deliveries(store).await;
    let now = T0 + 10 * SECOND;
    assert_eq!(claimed_ids(store, now, HOUR, 10).await.len(), 2);
    store
        .record_attempt(&AttemptOutcome {
            attempt: attempt("whd_created_1", now, Some(204), None),
            status: DeliveryStatus::Delivered,
            next_attempt_at_ms: now,
        })
        .await
        .expect("record");

    let original = store.event("evt_created_1").await.expect("event");
    let resend_at = now + 5 * SECOND;
    let scheduled = store
        .schedule_delivery(
            &original,
            "whd_resend",
            "https://new.example/hooks",
            resend_at,
        )
        .await
        .expect("schedule");
    assert_eq!(
        scheduled,
        DeliveryRow {
            delivery_id: "whd_resend".to_owned(),
            event_id: "evt_created_1".to_owned(),
            merchant_id: shop.clone(),
            url: "https://new.example/hooks".to_owned(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at_ms: resend_at,
            last_status_code: None,
            last_error: None,
            created_at_ms: resend_at,
            delivered_at_ms: None,
        }
    );
    let of_event: Vec<String> = deliveries_of(store, &shop, Some("evt_created_1"), 10)
        .await
        .into_iter()
        .map(|d| d.delivery_id)
        .collect();
    assert_eq!(of_event, ["whd_resend", "whd_created_1"], "newest first");
    assert_eq!(
        deliveries_of(store, &shop, None, 1).await[0].delivery_id,
        "whd_resend"
    );

    assert_eq!(
        claimed_ids(store, resend_at - 1, HOUR, 10).await,
        Vec::<String>::new()
    );
    let due = store
        .claim_due_deliveries(resend_at, HOUR, 10)
        .await
        .expect("claim");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].delivery, scheduled);
    assert_eq!(
        (
            due[0].event_type.as_str(),
            due[0].payload.as_str(),
            due[0].webhook_secret.as_str()
        ),
        (
            original.event_type.as_str(),
            original.payload.as_str(),
            "whsec_hooks"
        )
    );

    assert!(matches!(
        store
            .schedule_delivery(&original, "whd_resend", HOOK_URL, resend_at)
            .await,
        Err(StoreError::Conflict(Constraint::WebhookDelivery))
    ));
}

const TWO_PER_HOUR: RedeliveryLimit = RedeliveryLimit {
    per_window: 2,
    window_ms: HOUR,
};

/// Records an attempt of `delivery_id` at `at`: delivered, or failed and retried six hours later.
async fn record(store: &dyn Store, delivery_id: &str, at: i64, delivered: bool) {
    let (status, code) = if delivered {
        (DeliveryStatus::Delivered, Some(204))
    } else {
        (DeliveryStatus::Pending, Some(500))
    };
    store
        .record_attempt(&AttemptOutcome {
            attempt: attempt(delivery_id, at, code, None),
            status,
            next_attempt_at_ms: at + 6 * HOUR,
        })
        .await
        .expect("record");
}

async fn redeliver(store: &dyn Store, delivery_id: &str, at: i64) -> Redelivery {
    let event = store.event("evt_created_1").await.expect("event");
    store
        .schedule_redelivery(&event, delivery_id, HOOK_URL, at, TWO_PER_HOUR)
        .await
        .expect("schedule")
}

async fn redeliveries_are_limited_per_window_and_never_while_one_is_in_flight(store: &dyn Store) {
    let shop = two_deliveries(store).await;
    let now = T0 + 10 * SECOND;
    assert_eq!(
        redeliver(store, "whd_r1", now).await,
        Redelivery::InFlight,
        "the event's own delivery is due"
    );
    assert_eq!(claimed_ids(store, now, HOUR, 10).await.len(), 2);
    assert_eq!(
        redeliver(store, "whd_r1", now).await,
        Redelivery::InFlight,
        "the event's own delivery is being attempted"
    );
    record(store, "whd_created_1", now, false).await;

    let Redelivery::Scheduled(first) = redeliver(store, "whd_r1", now).await else {
        panic!("a failed delivery waiting for its retry can be redelivered");
    };
    assert_eq!(
        (
            first.delivery_id.as_str(),
            first.url.as_str(),
            first.status,
            first.next_attempt_at_ms
        ),
        ("whd_r1", HOOK_URL, DeliveryStatus::Pending, now)
    );
    assert_eq!(
        redeliver(store, "whd_r2", now + 1).await,
        Redelivery::InFlight
    );
    assert_eq!(
        redeliver(store, "whd_r2", now - 1).await,
        Redelivery::InFlight,
        "not yet attempted, also for a replica whose clock is behind"
    );
    record(store, "whd_r1", now + SECOND, true).await;
    assert!(matches!(
        redeliver(store, "whd_r2", now + 2 * SECOND).await,
        Redelivery::Scheduled(_)
    ));
    record(store, "whd_r2", now + 2 * SECOND, true).await;

    assert_eq!(
        redeliver(store, "whd_r3", now + 3 * SECOND).await,
        Redelivery::Limited {
            retry_at_ms: now + HOUR
        },
        "two redeliveries in the hour are the limit"
    );
    assert_eq!(
        redeliver(store, "whd_r3", now + HOUR - 1).await,
        Redelivery::Limited {
            retry_at_ms: now + HOUR
        },
        "still two at the window's last millisecond"
    );
    assert!(matches!(
        redeliver(store, "whd_r3", now + HOUR).await,
        Redelivery::Scheduled(_)
    ));
    let of_event: Vec<String> = deliveries_of(store, &shop, Some("evt_created_1"), 10)
        .await
        .into_iter()
        .map(|d| d.delivery_id)
        .collect();
    assert_eq!(of_event, ["whd_r3", "whd_r2", "whd_r1", "whd_created_1"]);
    assert!(
        deliveries_of(store, &shop, Some("evt_created_2"), 10)
            .await
            .len()
            == 1,
        "other events are untouched"
    );
}

async fn concurrent_redeliveries_of_one_event_schedule_one(store: Arc<dyn Store>) {
    let shop = two_deliveries(&*store).await;
    let now = T0 + 10 * SECOND;
    claimed_ids(&*store, now, HOUR, 10).await;
    record(&*store, "whd_created_1", now, true).await;
    let event = store.event("evt_created_1").await.expect("event");
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..12 {
        let store = Arc::clone(&store);
        let event = event.clone();
        tasks.spawn(async move {
            store
                .schedule_redelivery(
                    &event,
                    &format!("whd_race_{n}"),
                    HOOK_URL,
                    now,
                    TWO_PER_HOUR,
                )
                .await
                .expect("schedule")
        });
    }
    let mut scheduled = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.expect("task") {
            Redelivery::Scheduled(_) => scheduled += 1,
            Redelivery::InFlight => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(scheduled, 1);
    assert_eq!(
        deliveries_of(&*store, &shop, Some("evt_created_1"), 100)
            .await
            .len(),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// Both backends
// ---------------------------------------------------------------------------------------------

coffer_store::on_both_databases! {
    store: [
        a_wallet_reads_back_and_the_all_chains_wallet_is_the_fallback,
        there_is_no_wallet_for_an_unknown_merchant_or_chain,
        address_indexes_are_handed_out_once_and_survive_setting_the_same_key,
        indexes_reserved_in_blocks_never_overlap,
        a_new_key_restarts_the_index_and_retires_the_old_one,
        an_inserted_order_starts_pending_and_reads_back_equal,
        an_order_is_written_with_its_creation_event_and_delivery,
        a_duplicate_nonce_is_a_conflict_and_writes_nothing,
        a_duplicate_idempotency_key_is_a_conflict_and_the_key_finds_the_order,
        a_receiving_address_is_used_once_per_chain,
        listing_filters_by_status_chain_and_currency_and_counts,
        listing_pages_with_limit_and_offset_and_keeps_the_total,
        listing_sorts_by_time_human_amount_and_status,
        an_update_applies_its_state_and_events_and_bumps_the_version,
        a_stale_version_applies_nothing_from_its_batch,
        a_chain_step_moves_the_cursor_stores_payments_and_updates_orders,
        replaying_payments_does_not_duplicate_them,
        a_rewind_orphans_later_payments_and_a_new_block_restores_them,
        a_rewind_orphans_only_the_payments_it_names,
        a_restored_payment_takes_over_an_orphaned_row_and_never_a_live_one,
        blocks_behind_the_kept_window_are_pruned,
        a_chain_step_with_a_stale_order_version_changes_nothing,
        watched_orders_are_a_chains_open_orders_still_monitored,
        orders_in_a_status_are_listed_per_chain,
        only_pending_orders_past_their_window_are_due_to_expire,
        due_deliveries_are_claimed_once_per_lease_with_their_event_and_secret,
        deliveries_are_claimed_when_due_and_up_to_the_limit,
        a_delivered_attempt_is_logged_and_never_claimed_again,
        a_retry_waits_for_its_next_attempt_time,
        a_failed_delivery_is_never_claimed_again,
        a_redelivery_is_scheduled_for_an_existing_event_and_claimable,
        redeliveries_are_limited_per_window_and_never_while_one_is_in_flight,
    ];
    // Tests that share the store between tasks, on a multi-threaded runtime.
    shared_store: [
        concurrent_reservations_never_share_an_index,
        one_of_ten_concurrent_orders_with_one_nonce_wins,
        orders_arriving_together_are_each_written_once_or_fail_alone,
        concurrent_redeliveries_of_one_event_schedule_one,
    ];
}
