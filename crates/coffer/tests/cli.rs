//! The `coffer` binary as an operator uses it: configuration errors, merchants and keys, serve.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use coffer_store::testing::{Backend, fresh_url};
use serde_json::Value;

fn coffer(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coffer"));
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("coffer runs")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

#[test]
fn config_example_prints_a_template_that_config_check_accepts() {
    let output = coffer(&["config", "example"], &[]);
    assert!(output.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coffer.toml");
    std::fs::write(&path, &output.stdout).unwrap();
    let check = coffer(
        &["--config", path.to_str().unwrap(), "config", "check"],
        &[],
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).starts_with("# configuration is valid"));
}

#[test]
fn a_bad_config_key_is_named_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coffer.toml");
    std::fs::write(&path, "[server]\nlisten = \"not an address\"\n").unwrap();
    let output = coffer(&["--config", path.to_str().unwrap(), "serve"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.listen"), "{stderr}");

    let output = coffer(
        &["serve"],
        &[("COFFER__DATABASE__URL", "mysql://localhost/coffer")],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("database.url: unsupported scheme"));

    let output = coffer(&["serve"], &[("COFFER__LOG__FORMT", "json")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("log.formt"));
}

async fn merchants_and_keys_are_managed_from_the_command_line(backend: Backend) {
    let (url, _dir) = fresh_url(backend).await.expect("fresh database");
    let env = [("COFFER__DATABASE__URL", url.as_str())];
    let merchant = stdout_json(&coffer(
        &["merchant", "create", "--name", "Tea Shop", "--json"],
        &env,
    ));
    let merchant_id = merchant["id"].as_str().unwrap().to_owned();
    assert!(merchant_id.starts_with("mer_"));
    assert!(
        merchant["webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );

    let listed = stdout_json(&coffer(&["merchant", "list", "--json"], &env));
    assert_eq!(listed[0]["id"], merchant_id.as_str());
    assert_eq!(listed[0]["name"], "Tea Shop");

    let key = stdout_json(&coffer(
        &[
            "key",
            "create",
            "--merchant",
            &merchant_id,
            "--label",
            "web",
            "--json",
        ],
        &env,
    ));
    let key_id = key["id"].as_str().unwrap().to_owned();
    let secret = key["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(&format!("{key_id}_")));

    let keys = coffer(&["key", "list", "--merchant", &merchant_id, "--json"], &env);
    let keys_text = String::from_utf8_lossy(&keys.stdout).to_string();
    assert!(!keys_text.contains(&secret), "the key is shown only once");
    let keys: Value = serde_json::from_str(&keys_text).unwrap();
    assert_eq!(keys[0]["id"], key_id.as_str());
    assert_eq!(keys[0]["revoked_at"], Value::Null);

    let revoke = coffer(&["key", "revoke", &key_id], &env);
    assert!(revoke.status.success());
    let keys = stdout_json(&coffer(&["key", "list", "--json"], &env));
    assert!(keys[0]["revoked_at"].is_string());

    let missing = coffer(&["key", "create", "--merchant", "mer_nobody"], &env);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no merchant mer_nobody"));
    let malformed = coffer(&["key", "create", "--merchant", "shop"], &env);
    assert!(String::from_utf8_lossy(&malformed.stderr).contains("--merchant"));
    let unknown = coffer(&["key", "revoke", "ck_nothing"], &env);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no API key ck_nothing"));

    // GatePay credentials: the secret is shown once, revocation ends the ClientId.
    let gatepay = stdout_json(&coffer(
        &[
            "gatepay-key",
            "create",
            "--merchant",
            &merchant_id,
            "--json",
        ],
        &env,
    ));
    let client_id = gatepay["client_id"].as_str().unwrap().to_owned();
    assert_eq!(client_id.len(), 36);
    assert_eq!(gatepay["secret"].as_str().unwrap().len(), 48);
    assert_eq!(gatepay["merchant_id"], merchant_id.as_str());
    let revoked = coffer(&["gatepay-key", "revoke", &client_id], &env);
    assert!(revoked.status.success());
    assert!(String::from_utf8_lossy(&revoked.stdout).contains(&client_id));
    let unknown = coffer(&["gatepay-key", "revoke", "nobody"], &env);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no GatePay credential nobody"));
    let missing = coffer(&["gatepay-key", "create", "--merchant", "mer_nobody"], &env);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no merchant mer_nobody"));
}

#[tokio::test]
async fn merchants_and_keys_are_managed_from_the_command_line_on_sqlite() {
    merchants_and_keys_are_managed_from_the_command_line(Backend::Sqlite).await;
}

#[tokio::test]
async fn merchants_and_keys_are_managed_from_the_command_line_on_postgres() {
    merchants_and_keys_are_managed_from_the_command_line(Backend::Postgres).await;
}

/// Attack 4 (SSRF) through the CLI: a merchant endpoint on Coffer's own network is refused,
/// naming the flag, and creates no merchant, unless the operator allowed that network.
async fn a_webhook_url_into_coffers_network_is_refused_unless_allowed(backend: Backend) {
    let (url, _dir) = fresh_url(backend).await.expect("fresh database");
    let env = [("COFFER__DATABASE__URL", url.as_str())];
    for webhook in [
        "http://127.0.0.1:5432/",
        "http://[::1]:8080/",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://localhost:9000/hook",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
    ] {
        let output = coffer(
            &[
                "merchant",
                "create",
                "--name",
                "Scanner",
                "--webhook-url",
                webhook,
            ],
            &env,
        );
        assert_eq!(output.status.code(), Some(1), "{webhook}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--webhook-url: ") && stderr.contains("Coffer does not send requests"),
            "{webhook}: {stderr}"
        );
    }
    let listed = stdout_json(&coffer(&["merchant", "list", "--json"], &env));
    assert_eq!(listed, serde_json::json!([]), "no merchant was created");

    let allowed = [
        ("COFFER__DATABASE__URL", url.as_str()),
        ("COFFER__OUTBOUND__ALLOW_NETWORKS", "[\"10.1.0.0/16\"]"),
    ];
    let merchant = stdout_json(&coffer(
        &[
            "merchant",
            "create",
            "--name",
            "Internal",
            "--webhook-url",
            "http://10.1.2.3/hook",
            "--json",
        ],
        &allowed,
    ));
    assert_eq!(merchant["webhook_url"], "http://10.1.2.3/hook");
    let neighbour = coffer(
        &[
            "merchant",
            "create",
            "--name",
            "Next door",
            "--webhook-url",
            "http://10.2.0.1/hook",
        ],
        &allowed,
    );
    assert_eq!(neighbour.status.code(), Some(1));
    let listed = stdout_json(&coffer(&["merchant", "list", "--json"], &env));
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_webhook_url_into_coffers_network_is_refused_unless_allowed_on_sqlite() {
    a_webhook_url_into_coffers_network_is_refused_unless_allowed(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_webhook_url_into_coffers_network_is_refused_unless_allowed_on_postgres() {
    a_webhook_url_into_coffers_network_is_refused_unless_allowed(Backend::Postgres).await;
}

#[tokio::test]
async fn serve_answers_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("serve")
        .env("COFFER__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "COFFER__DATABASE__URL",
            format!("sqlite:{}", dir.path().join("c.db").display()),
        )
        .env("COFFER__LOG__FORMAT", "json")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let mut healthy = false;
    for _ in 0..100 {
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "serve never answered /healthz");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    let first = stderr
        .lines()
        .find(|line| line.contains("coffer is listening"))
        .expect("a listening log line");
    let line: Value = serde_json::from_str(first).expect("JSON log line");
    assert_eq!(line["level"], "INFO");
}
