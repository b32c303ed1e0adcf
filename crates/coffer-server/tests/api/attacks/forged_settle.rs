//! Attack 2: a forged settle answered "success".
//!
//! After an authorization is settled, the attacker re-posts `/x402/settle` (and the OKX
//! dialects go through the same engine) with its `from`/`nonce` but another payee, another
//! value and a junk signature — hoping for `success: true` with the old transaction, which a
//! seller would take as proof of payment. Only the same signed terms may be answered from the
//! journal; anything else is refused with a reason, and nothing is broadcast.

use coffer_store::testing::Backend;
use serde_json::json;

use coffer_gateway::facilitator_policy::FacilitatorPolicy;

use crate::kit::{Auth, Env, Options, PAY_TO, junk_signature};

async fn a_repeated_settle_with_other_terms_is_refused(backend: Backend) {
    // The journal's defence must hold for an open facilitator too, where any payee is allowed.
    let options = Options::on(backend)
        .configure(|state| state.with_facilitator_policy(FacilitatorPolicy::open()));
    let env = Env::with(options).await;
    let paid = Auth::fresh(env.payer.address(), PAY_TO, 1_000);
    let genuine = paid.v2_request(paid.payload(&env.payer));
    let (_, first) = env.post("/x402/settle", &[], &genuine).await;
    assert_eq!(first["success"], true, "{first}");
    let broadcasts = env.signer_transactions().await;

    let attacker_payee = env.stranger.address();
    let mut forged = paid.clone();
    forged.to = attacker_payee;
    forged.value = 999_000_000;
    let mut same_payee_more_value = paid.clone();
    same_payee_more_value.value = 2_000;
    let variants = vec![
        (
            "another payee and value, junk signature",
            forged.v2_request(forged.payload_signed(&junk_signature())),
        ),
        (
            "another payee and value, the payer's real signature of the old terms",
            forged.v2_request(forged.payload_signed(&paid.sign(&env.payer))),
        ),
        (
            "the same payee, another value, junk signature",
            same_payee_more_value
                .v2_request(same_payee_more_value.payload_signed(&junk_signature())),
        ),
        (
            "the same terms with a junk signature",
            paid.v2_request(paid.payload_signed(&junk_signature())),
        ),
    ];
    for (what, request) in variants {
        let (status, reply) = env.post("/x402/settle", &[], &request).await;
        assert_eq!(status, 200, "{what}: {reply}");
        assert_eq!(reply["success"], false, "{what}: {reply}");
        assert_eq!(
            reply["transaction"], "",
            "{what}: no transaction is handed out: {reply}"
        );
        assert!(
            reply["errorReason"].as_str().is_some_and(|r| !r.is_empty()),
            "{what}: a reason: {reply}"
        );
        // The v1 wire format is refused the same way.
        let v1 = json!({
            "x402Version": 1,
            "paymentPayload": {"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
                "payload": request["paymentPayload"]["payload"]},
            "paymentRequirements": {"scheme": "exact", "network": "base-sepolia",
                "maxAmountRequired": request["paymentRequirements"]["amount"],
                "resource": "https://shop.example/thing", "description": "", "mimeType": "application/json",
                "payTo": request["paymentRequirements"]["payTo"], "maxTimeoutSeconds": 300,
                "asset": request["paymentRequirements"]["asset"],
                "extra": {"name": "USDC", "version": "2"}},
        });
        let (_, reply) = env.post("/x402/settle", &[], &v1).await;
        assert_eq!(reply["success"], false, "{what} (v1): {reply}");
        assert_eq!(reply["transaction"], "", "{what} (v1): {reply}");
    }
    assert_eq!(
        env.signer_transactions().await,
        broadcasts,
        "nothing broadcast"
    );
    assert_eq!(
        env.balance(attacker_payee).await,
        alloy::primitives::U256::from(crate::kit::FUNDED)
    );

    // The genuine request, repeated, still answers what it did the first time.
    let (_, again) = env.post("/x402/settle", &[], &genuine).await;
    assert_eq!(
        (&again["success"], &again["transaction"]),
        (&first["success"], &first["transaction"])
    );
}

/// The same signature spelled another way (`v` as 0/1 instead of 27/28) is the same signed
/// authorization: repeated, it answers exactly what the first settle did.
async fn a_signature_respelled_answers_the_same(backend: Backend) {
    let options = Options::on(backend)
        .configure(|state| state.with_facilitator_policy(FacilitatorPolicy::open()));
    let env = Env::with(options).await;
    let paid = Auth::fresh(env.payer.address(), PAY_TO, 1_000);
    let signature = paid.sign(&env.payer);
    let (_, first) = env
        .post(
            "/x402/settle",
            &[],
            &paid.v2_request(paid.payload_signed(&signature)),
        )
        .await;
    assert_eq!(first["success"], true, "{first}");
    let v = u8::from_str_radix(&signature[130..132], 16).unwrap();
    let respelled = format!("{}{:02x}", &signature[..130], v - 27);
    let (_, again) = env
        .post(
            "/x402/settle",
            &[],
            &paid.v2_request(paid.payload_signed(&respelled)),
        )
        .await;
    assert_eq!(
        (&again["success"], &again["transaction"]),
        (&first["success"], &first["transaction"]),
        "{again}"
    );
}

#[tokio::test]
async fn a_signature_respelled_answers_the_same_on_sqlite() {
    a_signature_respelled_answers_the_same(Backend::Sqlite).await;
}

coffer_store::on_both_databases!(
    backend: [
        a_repeated_settle_with_other_terms_is_refused,
    ];
);
