//! Tests against the real `hephaestus` binary: first-run key, the keys CLI, settings
//! validation and graceful shutdown.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::common::built_plugins;

const BIN: &str = env!("CARGO_BIN_EXE_hephaestus");

pub(crate) fn command(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("HEPHAESTUS_DATA_DIR", data_dir)
        .env("HEPHAESTUS_LOG_FORMAT", "json")
        .env_remove("DATABASE_URL")
        .env_remove("STRIPE_SECRET_KEY")
        .env_remove("STRIPE_API_BASE")
        .current_dir(data_dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    stdout: BufReader<ChildStdout>,
    _stderr: tokio::task::JoinHandle<()>,
}

async fn start(data_dir: &Path) -> Server {
    start_command(command(data_dir)).await
}

/// Runs `serve` with `cmd`'s settings until it says it is listening.
pub(crate) async fn start_command(mut cmd: Command) -> Server {
    let mut child = cmd
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "hephaestus listening"
            {
                return v["addr"].as_str().unwrap().to_string();
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server did not start listening within 30 s");
    // Keep draining stderr so the server never blocks on a full pipe.
    let drain = tokio::spawn(drain_lines(stderr));
    Server {
        child,
        base: format!("http://{addr}"),
        stdout,
        _stderr: drain,
    }
}

/// The admin key a first start prints on its first stdout line.
pub(crate) async fn first_run_key(server: &mut Server) -> String {
    let mut first = String::new();
    server.stdout.read_line(&mut first).await.unwrap();
    first
        .strip_prefix("admin API key: ")
        .unwrap_or_else(|| panic!("first line is not the admin key: {first:?}"))
        .trim()
        .to_string()
}

async fn drain_lines(mut lines: tokio::io::Lines<BufReader<ChildStderr>>) {
    while let Ok(Some(_)) = lines.next_line().await {}
}

async fn sigterm(child: &Child) {
    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

async fn cli(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = command(data_dir).args(args).output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_key_and_keys_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let admin = first_run_key(&mut server).await;
    assert!(admin.starts_with("hk_"));
    let http = reqwest::Client::new();
    let customers = format!("{}/api/v1/revenue/customers", server.base);
    let status = |key: String| {
        let http = http.clone();
        let url = customers.clone();
        async move {
            http.get(&url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(admin.clone()).await, StatusCode::OK);

    let (ok, stdout, stderr) = cli(
        dir.path(),
        &["keys", "create", "--name", "reporting", "--scope", "read"],
    )
    .await;
    assert!(ok, "{stderr}");
    let read_key = stdout.trim().to_string();
    assert!(
        read_key.starts_with("hk_") && !stdout.contains(' '),
        "stdout is the bare key: {stdout:?}"
    );
    assert_eq!(status(read_key.clone()).await, StatusCode::OK);
    let post = http
        .post(&customers)
        .bearer_auth(&read_key)
        .json(&serde_json::json!({"email": "r@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::FORBIDDEN);

    let (ok, listing, _) = cli(dir.path(), &["keys", "list", "--json"]).await;
    assert!(ok);
    let keys: Vec<serde_json::Value> = serde_json::from_str(&listing).unwrap();
    assert_eq!(keys.len(), 2);
    assert!(
        !listing.contains(&admin[3..]) && !listing.contains(&read_key[3..]),
        "secrets are never listed"
    );
    let read_id = keys.iter().find(|k| k["name"] == "reporting").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, table, _) = cli(dir.path(), &["keys", "list"]).await;
    assert!(ok && table.contains("reporting") && table.contains("active"));

    let (ok, out, _) = cli(dir.path(), &["keys", "revoke", &read_id]).await;
    assert!(ok && out.contains("revoked"), "{out}");
    let (ok, _, err) = cli(
        dir.path(),
        &["keys", "revoke", "key_0000000000000000000000"],
    )
    .await;
    assert!(!ok && err.contains("no key"), "{err}");
    let (ok, _, err) = cli(
        dir.path(),
        &["keys", "create", "--name", "x", "--scope", "root"],
    )
    .await;
    assert!(!ok && err.contains("scope"), "{err}");

    // The running server sees the revocation within its key cache TTL (1 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(read_key.clone()).await != StatusCode::UNAUTHORIZED {
        assert!(
            Instant::now() < deadline,
            "revoked key still accepted after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    sigterm(&server.child).await;
    let exit = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");

    // A second start on the same data prints no new key.
    let mut again = start(dir.path()).await;
    sigterm(&again.child).await;
    let mut rest = String::new();
    again.stdout.read_to_string(&mut rest).await.unwrap();
    assert!(!rest.contains("admin API key"), "{rest}");
    assert!(again.child.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_stop_the_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 8] = [
        ("HEPHAESTUS_ADRR", "127.0.0.1:0", "HEPHAESTUS_ADRR"),
        ("HEPHAESTUS_ADDR", "localhost-8000", "--addr"),
        ("DATABASE_URL", "mysql://root@localhost/x", "--database-url"),
        ("HEPHAESTUS_RATE_LIMIT", "fast", "--rate-limit"),
        (
            "HEPHAESTUS_CORS_ORIGINS",
            "admin.example.com",
            "--cors-origins",
        ),
        (
            "HEPHAESTUS_REPORTING_CURRENCY",
            "ABC",
            "--reporting-currency",
        ),
        ("HEPHAESTUS_EXCHANGE_RATES", "EUR-USD", "--exchange-rates"),
        ("STRIPE_WEBHOOK_SECRET", " ", "--stripe-webhook-secret"),
    ];
    for (name, value, named) in cases {
        let out = command(dir.path())
            .arg("serve")
            .env(name, value)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}={value} started");
        assert!(stderr.contains(named), "{name}={value}: {stderr}");
    }
    // A .env file counts too, and the real environment wins over it.
    std::fs::write(dir.path().join(".env"), "HEPHAESTUS_RATE_LIMIT=fast\n").unwrap();
    let out = command(dir.path()).arg("migrate").output().await.unwrap();
    assert!(
        out.status.success(),
        "migrate does not read serve's settings"
    );
    let out = command(dir.path())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate-limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let admin = first_run_key(&mut server).await;
    let addr = server.base.strip_prefix("http://").unwrap().to_string();

    // A slow client: headers and half the body now, the rest after SIGTERM.
    let body = br#"{"email": "slow@example.com", "name": "Slow Client"}"#;
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/revenue/customers HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    sigterm(&server.child).await;
    // Wait until the server has stopped accepting: then it is draining, with our request open.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "server still accepting 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    stream.write_all(&body[10..]).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&response).contains("\"object\":\"customer\"") {
                break;
            }
        }
    })
    .await
    .expect("no response to the in-flight request");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    assert!(text.contains("slow@example.com"));

    drop(stream);
    let exit = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");

    // The segment consumer (leased at start) is handed back on the way out: a host that
    // replaces this one takes it at once, not when the lease runs out.
    let url = format!("sqlite://{}", dir.path().join("hephaestus.db").display());
    let store = hephaestus_store::Store::connect(&url, &Default::default())
        .await
        .unwrap();
    let replacement = hephaestus_store::consumers::claim(&store, "segments", "replacement", 60)
        .await
        .unwrap();
    assert!(
        replacement.is_some(),
        "the stopped host still holds the consumer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_script_works_against_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let admin = first_run_key(&mut server).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/quickstart.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("HEPHAESTUS_URL", &server.base)
        .env("HEPHAESTUS_KEY", &admin)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every step the README's quick start shows, in its order (an export's keys are sorted:
    // its events come before its `object`).
    let steps = [
        "\"object\":\"customer\"",
        "\"object\":\"list\"",
        "\"plan\":\"enterprise\"",
        "\"status\":\"succeeded\"",
        "\"object\":\"refund\"",
        "customer.created",
        "\"object\":\"customer_export\"",
        "\"email\":null",
    ];
    let mut from = 0;
    for step in steps {
        let at = stdout[from..]
            .find(step)
            .unwrap_or_else(|| panic!("{step} missing after byte {from}:\n{stdout}"));
        from += at;
    }
    sigterm(&server.child).await;
    assert!(server.child.wait().await.unwrap().success());
}

/// The value of one `hephaestus_plugin_cache_loads` series in the server's `/metrics`.
async fn cache_loads(base: &str, source: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("hephaestus_plugin_cache_loads_total{{source=\"{source}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loads_plugins_from_the_precompiled_cache() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for f in ["volume-pricing.wasm", "volume-pricing.toml"] {
        std::fs::copy(built_plugins().join(f), plugins.join(f)).unwrap();
    }
    let mut first = start(dir.path()).await;
    assert_eq!(cache_loads(&first.base, "compiled").await, 1);
    assert_eq!(cache_loads(&first.base, "cache").await, 0);
    sigterm(&first.child).await;
    assert!(first.child.wait().await.unwrap().success());

    let mut second = start(dir.path()).await;
    assert_eq!(
        cache_loads(&second.base, "compiled").await,
        0,
        "recompiled on restart"
    );
    assert_eq!(cache_loads(&second.base, "cache").await, 1);
    sigterm(&second.child).await;
    assert!(second.child.wait().await.unwrap().success());

    let (ok, out, err) = cli(dir.path(), &["plugins", "list"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("volume-pricing") && out.contains("pricing"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_check_and_call_explain_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = built_plugins().join("volume-pricing.wasm");
    let wasm = wasm.to_str().unwrap();
    let (ok, out, err) = cli(dir.path(), &["plugins", "check", wasm]).await;
    assert!(ok, "{err}");
    assert!(out.contains("a pricing plugin"), "{out}");

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"hello").unwrap();
    let (ok, _, err) = cli(dir.path(), &["plugins", "check", garbage.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(err.contains("not WebAssembly"), "{err}");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let (ok, _, err) = cli(dir.path(), &["plugins", "check", core.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );
    assert!(!err.contains("wasmtime"), "no raw engine dump: {err}");

    let input = dir.path().join("request.json");
    std::fs::write(
        &input,
        serde_json::json!({"quote": {
            "customer": {"id": "cus_1", "created_at": 0, "segments": [],
                "lifetime_value": {"amount_minor": 0, "currency": "USD"},
                "monthly_recurring_revenue": {"amount_minor": 0, "currency": "USD"}},
            "product_id": "prod_1", "product_name": "Seats", "price_id": "price_1",
            "unit_price": {"amount_minor": 1000, "currency": "USD"}, "quantity": 10}})
        .to_string(),
    )
    .unwrap();
    let (ok, out, err) = cli(
        dir.path(),
        &[
            "plugins",
            "call",
            wasm,
            "--world",
            "pricing",
            "--input",
            input.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["output"]["quote"]["amount"]["amount_minor"], 9000,
        "{out}"
    );
    assert!(report["fuel_used"].as_u64().unwrap() > 0);
    assert!(report["duration_us"].as_u64().is_some());
}
