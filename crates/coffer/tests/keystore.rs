//! Settlement signers from encrypted keystores: `coffer signer new|import` writes standard V3
//! JSON keystores, `coffer serve` decrypts the configured ones and settles with them, and a
//! wrong or missing password stops start-up with a clear message and exit code 2. The
//! password never appears in any output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use alloy::primitives::{Address, U256, address};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use coffer_evm::contracts::IERC20;
use coffer_evm::testnet;
use coffer_store::testing::{Backend, fresh_url};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use kit::chain::{USDC, chain_with_usdc, x402_request};
use kit::server::{json_answer, serve_on_its_own_port};

const PAY_TO: Address = address!("0x209693Bc6afc0C5328bA36FaF03C514EF312287C");
const PASSWORD: &str = "correct horse battery staple";

/// `coffer` with `env` and no keystore password from the test's own environment.
fn coffer(env: &[(&str, String)]) -> Command {
    let mut command = kit::server::coffer();
    command
        .env_remove("COFFER_SIGNER_KEYSTORE_PASSWORD")
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())));
    command
}

async fn run(mut command: Command, stdin: Option<&str>) -> Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("coffer finished")
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn signer_new_and_import_write_owner_only_keystores_and_never_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("keys/fresh.json");
    let password = [("COFFER_SIGNER_KEYSTORE_PASSWORD", PASSWORD.to_owned())];
    let mut command = coffer(&password);
    command.args([
        "signer",
        "new",
        "--json",
        "--keystore",
        fresh.to_str().unwrap(),
    ]);
    let output = run(command, None).await;
    assert!(output.status.success(), "{}", text(&output));
    let reply: Value = serde_json::from_slice(&output.stdout).unwrap();
    let decrypted =
        PrivateKeySigner::decrypt_keystore(&fresh, PASSWORD).expect("a standard V3 keystore");
    assert_eq!(reply["address"], decrypted.address().to_checksum(None));
    assert_eq!(mode_of(&fresh), 0o600);
    assert!(!text(&output).contains(PASSWORD));

    // Import reads the key from standard input and the password from a file.
    let imported = dir.path().join("imported.json");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let key = PrivateKeySigner::random();
    let import = |path: &Path| {
        let mut command = coffer(&[]);
        command.args([
            "signer",
            "import",
            "--keystore",
            path.to_str().unwrap(),
            "--password-file",
            password_file.to_str().unwrap(),
        ]);
        command
    };
    let secret = format!("0x{}\n", alloy::hex::encode(key.to_bytes()));
    let output = run(import(&imported), Some(&secret)).await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains(&key.address().to_checksum(None)));
    assert!(!text(&output).contains(secret.trim()));
    assert_eq!(
        PrivateKeySigner::decrypt_keystore(&imported, PASSWORD)
            .unwrap()
            .address(),
        key.address()
    );

    let again = run(import(&imported), Some(&secret)).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains("never overwrites"),
        "{}",
        text(&again)
    );
    let garbage = run(import(&dir.path().join("other.json")), Some("not a key\n")).await;
    assert_eq!(garbage.status.code(), Some(1));
    assert!(text(&garbage).contains("not a 32-byte hex private key"));

    // No password anywhere: a configuration error naming where it was looked for.
    let mut command = coffer(&[]);
    command.args([
        "signer",
        "new",
        "--keystore",
        dir.path().join("x.json").to_str().unwrap(),
    ]);
    let output = run(command, None).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("COFFER_SIGNER_KEYSTORE_PASSWORD"),
        "{}",
        text(&output)
    );
}

async fn a_server_with_a_keystore_signer_settles(backend: Backend) {
    let (chain, provider) = chain_with_usdc().await;
    let payer = testnet::dev_account(4).unwrap();
    testnet::mint(&provider, USDC, payer.address(), U256::from(1_000_000u64))
        .await
        .unwrap();
    // A funded anvil account, imported into a keystore.
    let signer = testnet::dev_account(8).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keystore = dir.path().join("signer.json");
    let mut command = coffer(&[("COFFER_SIGNER_KEYSTORE_PASSWORD", PASSWORD.to_owned())]);
    command.args(["signer", "import", "--keystore", keystore.to_str().unwrap()]);
    let secret = format!("0x{}", alloy::hex::encode(signer.to_bytes()));
    let output = run(command, Some(&secret)).await;
    assert!(output.status.success(), "{}", text(&output));

    let (database_url, _db) = fresh_url(backend).await.unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let env = vec![
        ("COFFER__DATABASE__URL", database_url),
        (
            "COFFER__CHAINS__BASE_SEPOLIA__RPC_URLS",
            format!("[\"{}\"]", chain.url()),
        ),
        (
            "COFFER__X402__SIGNER_KEYSTORES",
            format!("[\"{}\"]", keystore.display()),
        ),
        (
            "COFFER__X402__SIGNER_KEYSTORE_PASSWORD_FILE",
            password_file.display().to_string(),
        ),
        ("COFFER__X402__FACILITATOR__ACCESS", "public".to_owned()),
    ];
    let mut serve = coffer(&env);
    serve.arg("serve");
    let served = serve_on_its_own_port(serve)
        .await
        .unwrap_or_else(|log| panic!("coffer serve did not come up: {log}"));
    let (mut server, base) = (served.child, format!("http://127.0.0.1:{}", served.port));
    let supported: Value = reqwest::get(format!("{base}/x402/supported"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        supported["signers"]["eip155:*"],
        json!([signer.address().to_checksum(None)])
    );
    let settled: Value = json_answer(
        reqwest::Client::new()
            .post(format!("{base}/x402/settle"))
            .json(&x402_request(&payer, PAY_TO, 42_000)),
    )
    .await;
    assert_eq!(settled["success"], true, "{settled}");
    let hash: alloy::primitives::TxHash = settled["transaction"].as_str().unwrap().parse().unwrap();
    let transaction = provider
        .get_transaction_by_hash(hash)
        .await
        .unwrap()
        .expect("known");
    assert_eq!(
        transaction.inner.signer(),
        signer.address(),
        "the keystore's key sent it"
    );
    let balance = IERC20::new(USDC, &provider)
        .balanceOf(PAY_TO)
        .call()
        .await
        .unwrap();
    assert_eq!(balance, U256::from(42_000u64));
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    // The same configuration with a wrong password does not start: exit code 2, a message
    // naming the keystore, and no password in it.
    std::fs::write(&password_file, "hunter2-not-it\n").unwrap();
    let mut command = coffer(&env);
    command.arg("serve");
    let output = run(command, None).await;
    let said = text(&output);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(
        said.contains("invalid configuration: x402.signer_keystores[0]: ")
            && said.contains("cannot decrypt: wrong password"),
        "{said}"
    );
    assert!(!said.contains("hunter2"), "{said}");
    chain.stop().await.unwrap();
}

coffer_store::on_both_databases!(
    backend: [
        a_server_with_a_keystore_signer_settles,
    ];
);
