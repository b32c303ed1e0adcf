//! Strategies of hostile input for the property tests: text, JSON and request bodies as an
//! attacker writes them.

use proptest::prelude::*;
use serde_json::Value;

/// Text a hostile client puts where a field is expected: any characters, invalid UTF-8 made
/// lossy, NUL, extreme integers, 80-digit decimals, backticks (which serde quotes).
pub fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        any::<Vec<u8>>().prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        prop::sample::select(vec![
            String::new(),
            " ".to_owned(),
            "\0".to_owned(),
            "`x`".to_owned(),
            "1".to_owned(),
            "0".to_owned(),
            "0.000001".to_owned(),
            "1.0000000000000000000000001".to_owned(),
            "USDC".to_owned(),
            "base-sepolia".to_owned(),
            "BASESEPOLIA".to_owned(),
            "USDC_BASESEPOLIA".to_owned(),
            "{}".to_owned(),
            "https://shop.example/".to_owned(),
            "javascript:alert(1)".to_owned(),
            "http://127.0.0.1:1/".to_owned(),
            "2999-01-01T00:00:00Z".to_owned(),
            "+275760-09-13T00:00:00Z".to_owned(),
            i64::MIN.to_string(),
            i64::MAX.to_string(),
            u64::MAX.to_string(),
            "9".repeat(80),
            format!("0.{}", "9".repeat(80)),
            "-1".to_owned(),
            "1e999".to_owned(),
            "x".repeat(20_000),
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
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof!["[a-zA-Z_]{1,16}", hostile_text()],
                inner,
                0..5
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A JSON object with (some of) `fields`, each hostile text, any JSON, or absent, plus
/// sometimes a field nobody asked for.
pub fn shaped_object(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        5 => hostile_text().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => json_value(),
    ];
    (
        prop::collection::vec(prop::option::weighted(0.8, value), fields.len()),
        prop::option::weighted(0.1, ("[a-z]{1,8}", json_value())),
    )
        .prop_map(move |(values, stranger)| {
            let mut object: serde_json::Map<String, Value> = fields
                .iter()
                .zip(values)
                .filter_map(|(name, value)| value.map(|value| ((*name).to_owned(), value)))
                .collect();
            if let Some((name, value)) = stranger {
                object.insert(name, value);
            }
            Value::Object(object)
        })
}
