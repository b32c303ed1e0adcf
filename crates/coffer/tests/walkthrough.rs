//! The README's "Your first payment" walkthrough, run as written: `coffer dev` started from a
//! folder as a newcomer starts it, then the README's block (after `<!-- walkthrough -->`) in
//! bash from the same folder — create an order, pay part of it and the rest from the terminal,
//! follow it to confirmed, verify the newest webhook with the example verifier, pay the demo
//! paywall as an x402 client — and the other README blocks marked the same way (GatePay's
//! signed checkout order).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::path::Path;
use std::process::Stdio;

use kit::dev::Dev;
use tokio::process::Command;

/// The shell blocks that follow each `<!-- walkthrough -->` in the README, in order, as one
/// script.
fn walkthrough(readme: &str) -> String {
    let blocks: Vec<String> = readme
        .split("<!-- walkthrough -->")
        .skip(1)
        .map(|after| {
            let block = after
                .split_once("```sh\n")
                .expect("a sh block after the marker")
                .1;
            block
                .split_once("```")
                .expect("the block ends")
                .0
                .to_owned()
        })
        .collect();
    assert!(blocks.len() >= 3, "the README marks its walkthrough blocks");
    blocks.join("\n")
}

#[tokio::test]
async fn the_readme_walkthrough_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let script = walkthrough(&readme);
    assert!(script.contains("coffer dev pay"), "{script}");

    // A checkout as the newcomer has it: the examples beside the data directory.
    let checkout = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root.join("examples"), checkout.path().join("examples")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["dev", "--port", "0", "--rpc-ports-from", "0"])
        .current_dir(checkout.path())
        .env("RUST_LOG", "warn")
        .env_remove("COFFER_MASTER_KEY")
        .env_remove("COFFER__DATABASE__URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let dev = Dev::when_summarised(child, &checkout.path().join(".coffer-dev/summary.json")).await;

    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(checkout.path())
        .env_remove("COFFER__DATABASE__URL")
        .env_remove("COFFER_API_KEY")
        .env_remove("COFFER_URL")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "the customer's page: http://127.0.0.1:",
        "Coffer saw it: 1.00 paid of 3.00 USDC, order pending (underpaid)",
        "order confirmed: 2 of 2 confirmations, 3.00 paid of 3.00",
        "\nvalid\n",
        "paid 10000 base units to",
        "\"quote\":",
        // The payment-orders curl example.
        "\"order_info\":\"{\\\"product\\\": \\\"Premium Plan\\\", \\\"quantity\\\": 1}\"",
        // The GatePay example: a signed checkout order.
        "\"status\":\"SUCCESS\"",
        "\"fullCurrType\":\"USDC_BASESEPOLIA\"",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
    // Mistakes get a sentence that says what to do.
    let summary = checkout.path().join(".coffer-dev/summary.json");
    let pay = |args: Vec<&str>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(["dev", "pay"])
            .args(args)
            .env("COFFER_DEV_SUMMARY", &summary)
            .output()
            .unwrap()
    };
    let order = stdout
        .split("/pay/")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    for (args, says) in [
        (
            vec!["ORD-nothing"],
            "order ORD-nothing: payment order ORD-nothing not found".to_owned(),
        ),
        (
            vec![&order],
            format!("order {order} asks for nothing now (it is confirmed)"),
        ),
        (
            vec![&order, "--amount", "1", "--payer", "9"],
            "--payer: 9 is not a funded payer; choose 0 to 3".to_owned(),
        ),
        (
            vec![&order, "--amount", "1.0000001"],
            "--amount: \"1.0000001\"".to_owned(),
        ),
    ] {
        let output = pay(args.clone());
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&says), "{args:?}: {stderr}");
    }
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args([
            "dev",
            "pay",
            "ORD-x",
            "--summary",
            "/nonexistent/summary.json",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("is coffer dev running?"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    dev.interrupt().await;
}
