//! The `coffer` binary as an operator uses it: configuration errors, merchants and keys, serve.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use coffer_store::testing::{Backend, fresh_url};
use kit::server::{serve_on_its_own_port, wait_until_healthy};
use serde_json::Value;

fn coffer(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coffer"));
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("COFFER_MASTER_KEY")
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

/// `coffer serve` over `database_url`, with nothing on its standard input, killed when
/// dropped; started with [`serve_on_its_own_port`].
fn serve(database_url: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_coffer"));
    command
        .arg("serve")
        .env("COFFER__DATABASE__URL", database_url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// `coffer --config path config check`, which must succeed.
fn config_check(path: &std::path::Path) -> Output {
    let check = coffer(
        &["--config", path.to_str().unwrap(), "config", "check"],
        &[],
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    check
}

#[test]
fn config_example_prints_a_template_that_config_check_accepts() {
    let output = coffer(&["config", "example"], &[]);
    assert!(output.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coffer.toml");
    std::fs::write(&path, &output.stdout).unwrap();
    let check = config_check(&path);
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
    let (_, master_key) = coffer_store::MasterKey::generate();
    let env = [
        ("COFFER__DATABASE__URL", url.as_str()),
        ("COFFER_MASTER_KEY", master_key.as_str()),
    ];
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
    // For a person: a header row, and every column starting where its header does.
    stdout_json(&coffer(
        &[
            "merchant",
            "create",
            "--name",
            "Café",
            "--webhook-url",
            "https://hooks.example/coffer",
            "--json",
        ],
        &env,
    ));
    let table = coffer(&["merchant", "list"], &env);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let column = |line: &str, word: &str| line.find(word).unwrap();
    let webhook = column(lines[0], "WEBHOOK");
    let name = column(lines[0], "NAME");
    assert!(lines[0].starts_with("ID "), "{table}");
    for line in &lines[1..] {
        let cells: Vec<&str> = line
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cells.len(), 4, "{line}");
        assert!(line[webhook..].starts_with(cells[2]), "{table}");
        assert!(line[name..].starts_with(cells[3]), "{table}");
    }

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

    // payTo addresses: listed under a header, checksummed, by chain name.
    let pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
    let added = coffer(
        &[
            "payto",
            "add",
            "--merchant",
            &merchant_id,
            "--chain",
            "base-sepolia",
            "--address",
            &pay_to.to_lowercase(),
        ],
        &env,
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let listed = coffer(&["payto", "list", "--merchant", &merchant_id], &env);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        format!("CHAIN         PAYTO\nbase-sepolia  {pay_to}\n")
    );
}

/// Attack 4 (SSRF) through the CLI: a merchant endpoint on Coffer's own network is refused,
/// naming the flag, and creates no merchant, unless the operator allowed that network.
async fn a_webhook_url_into_coffers_network_is_refused_unless_allowed(backend: Backend) {
    let (url, _dir) = fresh_url(backend).await.expect("fresh database");
    let (_, master_key) = coffer_store::MasterKey::generate();
    let env = [
        ("COFFER__DATABASE__URL", url.as_str()),
        ("COFFER_MASTER_KEY", master_key.as_str()),
    ];
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
        ("COFFER_MASTER_KEY", master_key.as_str()),
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
async fn serve_answers_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite:{}", dir.path().join("c.db").display());
    let served = serve_on_its_own_port(serve(&database_url)).await.unwrap();
    let (mut child, port) = (served.child, served.port);
    assert!(
        wait_until_healthy(port, 100).await,
        "serve never answered /healthz"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status}");
    let stderr = served.log.lock().unwrap().join("\n");
    let first = stderr
        .lines()
        .find(|line| line.contains("coffer is listening"))
        .expect("a listening log line");
    let line: Value = serde_json::from_str(first).expect("JSON log line");
    assert_eq!(line["level"], "INFO");
}

/// A slowloris client against `coffer serve` with `server.header_read_timeout_seconds = 1`: it
/// is disconnected, and the server still answers everyone else.
#[tokio::test]
async fn serve_disconnects_a_client_that_sends_its_headers_slowly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite:{}", dir.path().join("c.db").display());
    let mut command = serve(&database_url);
    command
        .env("COFFER__SERVER__HEADER_READ_TIMEOUT_SECONDS", "1")
        .stdout(Stdio::null());
    let served = serve_on_its_own_port(command).await.unwrap();
    let (_child, port) = (served.child, served.port);
    assert!(
        wait_until_healthy(port, 100).await,
        "serve never answered /healthz"
    );
    let url = format!("http://127.0.0.1:{port}/healthz");

    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let reading = tokio::spawn(async move {
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer).await;
        started.elapsed()
    });
    for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: 1".iter().take(10) {
        if reading.is_finished() || writer.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let closed_after = tokio::time::timeout(Duration::from_secs(2), reading)
        .await
        .expect("the slow client is still connected after 5 s")
        .unwrap();
    assert!(
        closed_after < Duration::from_secs(3),
        "disconnected after {closed_after:?}"
    );
    assert!(reqwest::get(&url).await.unwrap().status().is_success());
}

/// What an RPC URL, a database URL and a paywall upstream hide; none may be printed.
const SECRETS: [&str; 5] = [
    "SEKRETKEY123",
    "SEKRETKEY456",
    "SEKRETPASS",
    "sekretuser",
    "SEKRETDB",
];

fn assert_prints_no_secret(output: &Output) {
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for secret in SECRETS {
        assert!(!printed.contains(secret), "{secret} printed: {printed}");
    }
}

#[test]
fn config_check_prints_rpc_urls_without_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coffer.toml");
    std::fs::write(
        &path,
        r#"[database]
url = "postgres://coffer:SEKRETDB@127.0.0.1:1/coffer"

[chains.base-sepolia]
rpc_urls = ["https://base-sepolia.example/v2/SEKRETKEY123?apikey=SEKRETKEY456", "https://sekretuser:SEKRETPASS@rpc.example:8545"]

[[paywall.routes]]
path = "/premium/*"
price = "0.01"
networks = ["base-sepolia"]
assets = ["USDC"]
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
upstream = "https://api.example/v1?key=SEKRETKEY123"
"#,
    )
    .unwrap();
    let check = config_check(&path);
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        printed.contains("https://base-sepolia.example/…")
            && printed.contains("https://rpc.example:8545/…"),
        "the endpoints are still named: {printed}"
    );
    assert_prints_no_secret(&check);

    // The same URLs from the environment.
    let check = coffer(
        &["config", "check"],
        &[(
            "COFFER__CHAINS__BASE__RPC_URLS",
            "[\"https://base.example/v2/SEKRETKEY123\"]",
        )],
    );
    assert!(check.status.success());
    assert_prints_no_secret(&check);

    // An RPC URL that is refused is named without its key.
    let refused = coffer(
        &["config", "check"],
        &[(
            "COFFER__CHAINS__BASE__RPC_URLS",
            "[\"wss://sekretuser:SEKRETPASS@rpc.example/v2/SEKRETKEY123\"]",
        )],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("chains.base.rpc_urls[0]"));
    assert_prints_no_secret(&refused);
}

/// `coffer serve` over `url`, with `key` as its master key (if any): whether it came up, and
/// what it printed when it did not.
async fn try_serve(url: &str, key: Option<&str>) -> (bool, String) {
    let mut command = serve(url);
    command
        .env_remove("COFFER_MASTER_KEY")
        .stdout(Stdio::null());
    if let Some(key) = key {
        command.env("COFFER_MASTER_KEY", key);
    }
    match serve_on_its_own_port(command).await {
        Ok(mut served) => {
            assert!(wait_until_healthy(served.port, 100).await);
            served.child.kill().await.unwrap();
            (true, String::new())
        }
        Err(log) => (false, log),
    }
}

#[tokio::test]
async fn serve_without_the_master_key_refuses_a_database_holding_secrets() {
    let (url, _dir) = fresh_url(Backend::Sqlite).await.expect("fresh database");
    let (_, key) = coffer_store::MasterKey::generate();
    let env = [
        ("COFFER__DATABASE__URL", url.as_str()),
        ("COFFER_MASTER_KEY", key.as_str()),
    ];

    // An empty database is served without a key; a secret cannot be stored without one.
    assert_eq!(try_serve(&url, None).await, (true, String::new()));
    let refused = coffer(
        &["merchant", "create", "--name", "Tea Shop"],
        &[("COFFER__DATABASE__URL", url.as_str())],
    );
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("no master key is configured") && message.contains("generate-key"),
        "{message}"
    );
    let listed = stdout_json(&coffer(&["merchant", "list", "--json"], &env));
    assert_eq!(listed, serde_json::json!([]), "nothing was stored");

    let merchant = stdout_json(&coffer(
        &["merchant", "create", "--name", "Tea Shop", "--json"],
        &env,
    ));
    let merchant_id = merchant["id"].as_str().unwrap();
    stdout_json(&coffer(
        &["okx-key", "create", "--merchant", merchant_id, "--json"],
        &env,
    ));

    // Now the database holds secrets: no key is one clear message, and so is another key.
    let (up, message) = try_serve(&url, None).await;
    assert!(!up);
    assert!(
        message.contains("no master key is configured")
            && message.contains("coffer secrets generate-key > master.key")
            && message.lines().count() == 1,
        "{message}"
    );
    let (_, other) = coffer_store::MasterKey::generate();
    let (up, message) = try_serve(&url, Some(&other)).await;
    assert!(!up);
    let sealed_with = coffer_store::MasterKey::parse(&key).unwrap();
    assert!(
        message.contains(&format!("encrypted with master key {}", sealed_with.id())),
        "{message}"
    );
    assert_eq!(try_serve(&url, Some(&key)).await, (true, String::new()));
}

#[tokio::test]
async fn secrets_stored_in_plain_text_by_an_older_coffer_are_encrypted_at_start() {
    let (url, _dir) = fresh_url(Backend::Sqlite).await.expect("fresh database");
    // `coffer migrate` works without a key; then an older Coffer's rows, in plain text.
    assert!(
        coffer(&["migrate"], &[("COFFER__DATABASE__URL", url.as_str())])
            .status
            .success()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO merchants (id, name, webhook_url, webhook_secret, created_at)
         VALUES ('mer_legacy', 'Old Shop', NULL, 'whsec_PLAINLEGACY', '2025-01-01T00:00:00Z')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let (up, message) = try_serve(&url, None).await;
    assert!(!up);
    assert!(
        message.contains("stored before Coffer encrypted them")
            && message.contains("coffer secrets generate-key > master.key"),
        "{message}"
    );
    let (_, key) = coffer_store::MasterKey::generate();
    assert!(try_serve(&url, Some(&key)).await.0);
    let stored: String = sqlx::query_scalar("SELECT webhook_secret FROM merchants")
        .fetch_one(&pool)
        .await
        .unwrap();
    let id = coffer_store::MasterKey::parse(&key)
        .unwrap()
        .id()
        .to_owned();
    assert!(stored.starts_with(&format!("enc:v1:{id}:")), "{stored}");
    assert!(!stored.contains("PLAINLEGACY"));
}

#[tokio::test]
async fn secrets_rotate_reencrypts_everything_and_the_old_key_stops_working() {
    let (url, _dir) = fresh_url(Backend::Sqlite).await.expect("fresh database");
    let keys = tempfile::tempdir().unwrap();
    let old_file = keys.path().join("old.key");
    let new_file = keys.path().join("new.key");
    for file in [&old_file, &new_file] {
        let made = coffer(
            &[
                "secrets",
                "generate-key",
                "--output",
                file.to_str().unwrap(),
            ],
            &[],
        );
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "a key file is its owner's alone");
    }
    let with_key = |file: &std::path::Path| {
        vec![
            ("COFFER__DATABASE__URL".to_owned(), url.clone()),
            (
                "COFFER__SECRETS__MASTER_KEY_FILE".to_owned(),
                file.display().to_string(),
            ),
        ]
    };
    let run = |args: &[&str], file: &std::path::Path| {
        let env = with_key(file);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        coffer(args, &env)
    };
    let merchant = stdout_json(&run(
        &["merchant", "create", "--name", "Shop", "--json"],
        &old_file,
    ));
    let merchant_id = merchant["id"].as_str().unwrap().to_owned();
    stdout_json(&run(
        &[
            "gatepay-key",
            "create",
            "--merchant",
            &merchant_id,
            "--json",
        ],
        &old_file,
    ));
    stdout_json(&run(
        &["okx-key", "create", "--merchant", &merchant_id, "--json"],
        &old_file,
    ));
    let old_id = coffer_store::MasterKey::parse(&std::fs::read_to_string(&old_file).unwrap())
        .unwrap()
        .id()
        .to_owned();
    let new_id = coffer_store::MasterKey::parse(&std::fs::read_to_string(&new_file).unwrap())
        .unwrap()
        .id()
        .to_owned();
    let status = stdout_json(&run(&["secrets", "status", "--json"], &old_file));
    assert_eq!(status["sealed"], serde_json::json!({ old_id.clone(): 3 }));

    let rotate = || {
        stdout_json(&run(
            &[
                "secrets",
                "rotate",
                "--new-key-file",
                new_file.to_str().unwrap(),
                "--json",
            ],
            &old_file,
        ))
    };
    let rotated = rotate();
    assert_eq!(rotated["resealed"], 3);
    let status = stdout_json(&run(&["secrets", "status", "--json"], &new_file));
    assert_eq!(status["sealed"], serde_json::json!({ new_id.clone(): 3 }));
    assert_eq!(status["plain"], 0);
    // Running it again changes nothing.
    let again = rotate();
    assert_eq!(again["resealed"], 0);

    let listed = run(&["merchant", "list", "--json"], &old_file);
    assert!(!listed.status.success(), "the old key opens nothing");
    assert_eq!(
        stdout_json(&run(&["merchant", "list", "--json"], &new_file))[0]["id"],
        merchant_id.as_str()
    );
    let old_key = std::fs::read_to_string(&old_file).unwrap();
    let new_key = std::fs::read_to_string(&new_file).unwrap();
    assert!(!try_serve(&url, Some(old_key.trim())).await.0);
    assert!(try_serve(&url, Some(new_key.trim())).await.0);
}

#[test]
fn a_master_key_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("master.key");
    std::fs::write(
        &file,
        format!("{}\n", coffer_store::MasterKey::generate().1),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let env = [("COFFER__SECRETS__MASTER_KEY_FILE", file.to_str().unwrap())];
    let refused = coffer(&["config", "check"], &env);
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("secrets.master_key_file") && message.contains("chmod 600"),
        "{message}"
    );
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert!(coffer(&["config", "check"], &env).status.success());
    let check = coffer(&["config", "check"], &env);
    let printed = String::from_utf8_lossy(&check.stdout);
    let key = std::fs::read_to_string(&file).unwrap();
    assert!(
        !printed.contains(key.trim()),
        "the key itself is never printed"
    );
}

coffer_store::on_both_databases!(
    backend: [
        merchants_and_keys_are_managed_from_the_command_line,
        a_webhook_url_into_coffers_network_is_refused_unless_allowed,
    ];
);

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("coffer.db").display());
    let output = coffer(
        &["migrate"],
        &[("COFFER__DATABASE__URL", &url), ("RUST_LOG", "info")],
    );
    assert!(output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("applied migration"), "{log}");
    assert!(!log.contains('\u{1b}'), "an escape code in {log:?}");
}

#[test]
fn a_command_run_where_there_is_no_database_says_so_and_creates_none() {
    let elsewhere = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["merchant", "list"])
        .current_dir(elsewhere.path())
        .env_remove("COFFER__DATABASE__URL")
        .env_remove("COFFER_MASTER_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no database at") && stderr.contains("COFFER__DATABASE__URL"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(elsewhere.path())
            .unwrap()
            .next()
            .is_none(),
        "a database was created"
    );
    // `coffer migrate` is how one is made on purpose.
    let migrate = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("migrate")
        .current_dir(elsewhere.path())
        .env_remove("COFFER__DATABASE__URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(migrate.status.success());
    assert!(elsewhere.path().join("coffer.db").is_file());
}

#[test]
fn payout_wallets_are_made_and_imported_from_the_command_line_without_showing_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("coffer.db").display());
    let (_, master_key) = coffer_store::MasterKey::generate();
    let env = [
        ("COFFER__DATABASE__URL", url.as_str()),
        ("COFFER_MASTER_KEY", master_key.as_str()),
    ];
    let merchant = stdout_json(&coffer(
        &["merchant", "create", "--name", "Payouts", "--json"],
        &env,
    ));
    let merchant_id = merchant["id"].as_str().unwrap();
    let made = coffer(
        &[
            "payout-wallet",
            "new",
            "--merchant",
            merchant_id,
            "--chain",
            "polygon",
            "--json",
        ],
        &env,
    );
    let made = stdout_json(&made);
    let address = made["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("0x") && address.len() == 42, "{made}");
    assert!(made.get("private_key").is_none(), "{made}");

    // An imported key is read from standard input and never echoed or stored in plain text.
    let key = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
    let mut import = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args([
            "payout-wallet",
            "import",
            "--merchant",
            merchant_id,
            "--chain",
            "bsc",
        ])
        .envs(env)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(import.stdin.take().unwrap(), "{key}").unwrap();
    }
    let imported = import.wait_with_output().unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&imported.stdout),
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(
        said.contains("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
        "{said}"
    );
    assert!(!said.contains(&key[2..]), "the key was printed");
    let mut database = Vec::new();
    for file in ["coffer.db", "coffer.db-wal"] {
        database.extend(std::fs::read(dir.path().join(file)).unwrap_or_default());
    }
    assert!(
        !String::from_utf8_lossy(&database).contains(&key[2..]),
        "the key is stored in plain text"
    );

    let listed = coffer(&["payout-wallet", "list", "--merchant", merchant_id], &env);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.starts_with("CHAIN "), "{listed}");
    assert!(
        listed.contains(&address) && listed.contains("bsc"),
        "{listed}"
    );
    // One per chain, and a bad chain is named.
    let again = coffer(
        &[
            "payout-wallet",
            "new",
            "--merchant",
            merchant_id,
            "--chain",
            "polygon",
        ],
        &env,
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("has a payout wallet on polygon already")
    );
    let unknown = coffer(
        &[
            "payout-wallet",
            "new",
            "--merchant",
            merchant_id,
            "--chain",
            "solana",
        ],
        &env,
    );
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("--chain: \"solana\""));
}

/// `scripts/dev.sh` installs only what running needs: `install-tools.sh --run` sets up the npm
/// tools (anvil) and nothing the tests alone need (Python, Chromium, nextest), so it runs
/// without root; and dev.sh lets cargo show its build.
#[test]
fn the_run_command_installs_only_what_running_needs_and_shows_the_build() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new("bash")
        .arg(root.join("scripts/install-tools.sh"))
        .arg("--run")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("anvil: linked"), "{said}");
    for test_only in ["python", "chromium", "nextest"] {
        assert!(
            !said.contains(test_only),
            "--run installed {test_only}: {said}"
        );
    }
    let dev = std::fs::read_to_string(root.join("scripts/dev.sh")).unwrap();
    assert!(dev.contains("install-tools.sh --run"), "{dev}");
    assert!(!dev.contains("--quiet"), "the build is hidden: {dev}");
}
