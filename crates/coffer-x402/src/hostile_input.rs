//! Strategies of hostile input for the property tests: text, JSON and x402 requests as an
//! attacker writes them.

use proptest::prelude::*;
use serde_json::{Value, json};

/// Text a hostile client puts where a field is expected.
pub fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        any::<Vec<u8>>().prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        prop::sample::select(vec![
            String::new(),
            "\0".to_owned(),
            "exact".to_owned(),
            "base-sepolia".to_owned(),
            "eip155:84532".to_owned(),
            "0x".to_owned(),
            "0x036CbD53842c5426634e7929541eC2318f3dCF7e".to_owned(),
            format!("0x{}", "f".repeat(64)),
            format!("0x{}", "0".repeat(130)),
            i64::MIN.to_string(),
            u64::MAX.to_string(),
            "9".repeat(80),
            "-1".to_owned(),
            "1e999".to_owned(),
        ]),
    ]
}

/// Any JSON value, nested a few levels, with hostile leaves.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        hostile_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(prop_oneof!["[a-zA-Z]{1,16}", hostile_text()], inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A field's value: usually hostile text, sometimes any JSON at all, sometimes absent.
fn field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        6 => hostile_text().prop_map(|text| Some(Value::from(text))),
        2 => json_value().prop_map(Some),
        1 => Just(None),
    ]
}

fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| (name.to_owned(), value)))
            .collect(),
    )
}

prop_compose! {
    /// A request of the right shape (either version) whose every leaf is hostile.
    pub fn shaped_request()(
        version in prop_oneof![Just(json!(1)), Just(json!(2)), json_value()],
        leaves in prop::collection::vec(field(), 16),
        extra in prop_oneof![json_value(), Just(json!({"name": "USDC", "version": "2"}))],
    ) -> Value {
        let mut leaves = leaves.into_iter();
        let mut next = || leaves.next().flatten();
        let authorization = object(vec![
            ("from", next()),
            ("to", next()),
            ("value", next()),
            ("validAfter", next()),
            ("validBefore", next()),
            ("nonce", next()),
        ]);
        let requirements = object(vec![
            ("scheme", next()),
            ("network", next()),
            ("amount", next()),
            ("maxAmountRequired", next()),
            ("asset", next()),
            ("payTo", next()),
            ("maxTimeoutSeconds", next()),
            ("extra", Some(extra)),
        ]);
        json!({
            "x402Version": version,
            "paymentPayload": {
                "x402Version": version,
                "scheme": next(),
                "network": next(),
                "accepted": requirements,
                "payload": {"signature": next(), "authorization": authorization},
            },
            "paymentRequirements": requirements,
        })
    }
}
