//! The README's webhook-verification example runs and agrees with Coffer's signer.

use std::io::Write;
use std::process::{Command, Stdio};

use coffer_gateway::events::sign;

fn run_example(secret: &str, header: &str, body: &[u8]) -> (bool, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/verify_webhook.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .arg(secret)
        .arg(header)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the example");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

#[test]
fn the_python_example_accepts_coffer_signatures_and_rejects_forgeries() {
    let body = br#"{"id":"evt_1","type":"payment_order.confirmed","data":{"order_id":"ORD-1"}}"#;
    let now = chrono::Utc::now().timestamp();
    let header = sign("whsec_example", now, body);
    assert_eq!(
        run_example("whsec_example", &header, body),
        (true, "valid".to_owned())
    );
    assert_eq!(
        run_example("whsec_other", &header, body),
        (false, "signature mismatch".to_owned())
    );
    assert_eq!(
        run_example("whsec_example", &header, b"{}"),
        (false, "signature mismatch".to_owned())
    );
    let stale = sign("whsec_example", now - 3_600, body);
    assert_eq!(
        run_example("whsec_example", &stale, body),
        (false, "stale timestamp".to_owned())
    );
}
