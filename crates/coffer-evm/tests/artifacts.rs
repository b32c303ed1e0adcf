//! The committed contract artifacts in `contracts/artifacts/` are what the pinned solc makes of
//! `contracts/src/`: the bindings in `coffer_evm::contracts` and the bytecode deployed by
//! `coffer_evm::testnet` are built from those artifacts, so a stale one would silently test
//! other code than the sources show.
//!
//! Needs node and the solc-js installed by `scripts/install-tools.sh`; without them the test
//! fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

fn repo_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

#[test]
fn committed_contract_artifacts_match_a_fresh_compilation() {
    let root = repo_root();
    let solc = root.join(".tools/node_modules/solc");
    assert!(
        solc.is_dir(),
        "solc-js is not installed at {}: run scripts/install-tools.sh",
        solc.display()
    );

    let output = Command::new("node")
        .arg("contracts/build.mjs")
        .arg("--check")
        .current_dir(&root)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run node ({error}): install Node.js, then run scripts/install-tools.sh")
        });

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`node contracts/build.mjs --check` failed ({}); run `node contracts/build.mjs` and commit the \
         artifacts.\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("artifacts up to date"),
        "unexpected output:\n{stdout}\n{stderr}"
    );
}
