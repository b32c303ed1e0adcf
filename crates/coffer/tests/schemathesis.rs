//! API fuzzing: schemathesis (pinned in `tools/requirements.txt`) reads `coffer dev`'s
//! `/openapi.json` and sends every documented operation the requests it derives from the
//! document — valid ones, boundary values, malformed ones, and chains that follow the
//! document's links — with the settings of `tests/schemathesis.toml` (fixed seed, a bounded
//! number of examples per operation, one worker).
//!
//! The run fails on any 5xx answer, on an answer whose status, content type, headers or body the
//! document does not describe, and on an operation that refuses every valid request it is sent
//! (the document would then not describe what the server accepts). The demo merchant's API key
//! authenticates the bearer and `Merchant-App-Key` operations; GatePay's and OKX's requests need
//! an HMAC signature no fuzzer can make, so they are answered 401 in their family's envelope,
//! as documented.
//!
//! The checks left out: `negative_data_rejection` and `positive_data_acceptance` (the document
//! describes a well-formed request of each operation, a subset of what the server accepts: the
//! server accepts some requests outside it, such as an events `limit` beyond the `int64`
//! format the document names, which it clamps to 500, and refuses some inside it that no schema can rule out, such as an expiry in the
//! past, a duplicate nonce, a Pelago order without `amount` and without `X-PAYMENT`, or `1.0`
//! where it reads an integer), `missing_required_header` and `ignored_auth` (the x402
//! facilitator is open within its access policy by design), `unsupported_method` and
//! `allow_header_conformance` (undocumented methods are answered 405 in the native envelope,
//! without `Allow`), `use_after_free` and `ensure_resource_availability` (there is no delete
//! operation), and `object_level_authorization` (it needs a second merchant's credentials,
//! which `coffer dev` does not create).
//!
//! Run it alone with `cargo test -p coffer --test schemathesis`; it takes about a minute.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kit::dev::Dev;
use tokio::process::Command;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pinned schemathesis, or a failure saying how to install it.
fn schemathesis() -> PathBuf {
    let binary = root().join(".tools/python/bin/schemathesis");
    assert!(
        binary.is_file(),
        "schemathesis is not installed at {}: run scripts/install-tools.sh",
        binary.display()
    );
    binary
}

async fn start_dev(data_dir: &Path) -> Dev {
    let summary_path = data_dir.join("summary.json");
    let child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args([
            "dev",
            "--fresh",
            "--port",
            "0",
            "--rpc-ports-from",
            "0",
            "--data-dir",
        ])
        .arg(data_dir)
        .arg("--summary")
        .arg(&summary_path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Its warnings and errors, to show with a failure.
        .stderr(std::fs::File::create(data_dir.join("coffer.log")).expect("log file"))
        .spawn()
        .expect("coffer dev starts");
    Dev::when_summarised(child, &summary_path).await
}

/// How many operations a document describes, but for `GET /openapi.json` itself (schemathesis
/// does not test the operation it reads the document from).
fn operation_count(document: &serde_json::Value) -> usize {
    document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| path.as_str() != "/openapi.json")
        .map(|(_, item)| item.as_object().expect("path item").len())
        .sum()
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer_on_coffer_dev() {
    let schemathesis = schemathesis();
    let data_dir = tempfile::tempdir().unwrap();
    let dev = start_dev(data_dir.path()).await;
    let document_url = format!("{}/openapi.json", dev.summary.api_base_url);
    let document: serde_json::Value = reqwest::get(&document_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations = operation_count(&document);

    let started = Instant::now();
    let run = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(root().join("crates/coffer/tests/schemathesis.toml"))
        .args(["run", "--no-color"])
        .arg(&document_url)
        .env("COFFER_API_KEY", &dev.summary.api_key)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "120")
        // Anything schemathesis writes (caches, reports) stays in the temporary directory.
        .current_dir(data_dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finishes within 10 minutes")
        .expect("schemathesis runs");
    dev.interrupt().await;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "schemathesis ran for {:.0} s:\n{report}",
        started.elapsed().as_secs_f64()
    );
    let errors: String = std::fs::read_to_string(data_dir.path().join("coffer.log"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("ERROR"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        output.status.success(),
        "schemathesis found failures ({}):\n{report}\ncoffer dev's errors:\n{errors}",
        output.status
    );
    let tested = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested: "))
        .and_then(|count| count.trim().parse::<usize>().ok());
    assert_eq!(
        tested,
        Some(operations),
        "schemathesis did not test every documented operation:\n{report}"
    );
}
