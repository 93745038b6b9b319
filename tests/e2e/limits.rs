//! A key's rate limit across hosts, and as the keys CLI sets it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use hephaestus_core::keys::Scope;
use hephaestus_store::keys::{self, KeyRate};
use reqwest::StatusCode;

use crate::binary::{command, first_run_key, start_command};
use crate::common::{Db, TestDb, TestServer, test_config};

const CUSTOMERS: &str = "/api/v1/revenue/customers?limit=1";

/// Requests for `key` sent as fast as `workers` clients can, until `until`; the 200s.
async fn hammer(s: Arc<TestServer>, key: String, until: Instant, admitted: Arc<AtomicUsize>) {
    while Instant::now() < until {
        let r = s
            .client
            .get(s.url(CUSTOMERS))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::OK => {
                admitted.fetch_add(1, Ordering::Relaxed);
            }
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(r.headers().contains_key("retry-after"));
            }
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
    }
}

/// Two hosts on one PostgreSQL, one key limited to 20/s, hammered through both for whole
/// seconds: together they admit the limit, within the documented tolerance (none over, as
/// allowances are leased from the shared count before they are used).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limit_holds_across_two_hosts() {
    let a = Arc::new(TestServer::start_with(Db::Postgres, test_config()).await);
    let store_b = a.db.store().await;
    let b_db = TestDb {
        url: a.db.url.clone(),
        schema: None,
        _dir: tempfile::tempdir().unwrap(),
    };
    let b = Arc::new(
        TestServer::serve(b_db, store_b, a.admin.clone(), test_config(), Router::new()).await,
    );
    let key = keys::create_with_rate(
        &a.store,
        "limited",
        Scope::Read,
        Some(KeyRate {
            limit: 20,
            window_secs: 1,
        }),
    )
    .await
    .unwrap()
    .secret
    .secret;

    // Whole windows: from the start of a second, for three seconds.
    const SECONDS: u32 = 3;
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let to_next = Duration::from_secs(1) - Duration::from_nanos(since_epoch.subsec_nanos().into());
    tokio::time::sleep(to_next + Duration::from_millis(20)).await;
    // Stopping short of the last window's end, so no request still on its way is counted
    // in the window after.
    let until = Instant::now() + Duration::from_secs(SECONDS.into()) - Duration::from_millis(220);
    let admitted = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let host = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(hammer(host, key.clone(), until, admitted.clone()))
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let admitted = admitted.load(Ordering::Relaxed);
    let per_second = admitted as f64 / f64::from(SECONDS);
    eprintln!("two hosts admitted {admitted} in {SECONDS} s ({per_second:.1}/s) at 20/s");
    assert!(
        per_second <= 22.0,
        "{per_second:.1}/s admitted through two hosts at 20/s"
    );
    assert!(
        per_second >= 18.0,
        "only {per_second:.1}/s admitted at 20/s"
    );
    // The shared count never passed the limit in any window.
    let over = a.count("rate_limit_windows WHERE count > 20").await;
    assert_eq!(over, 0);
}

async fn cli(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = command(dir).args(args).output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `keys create --rate-limit` takes the syntax of `HEPHAESTUS_RATE_LIMIT`, and the window
/// given is the one the server counts in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_takes_a_rate() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_command(command(dir.path())).await;
    let _admin = first_run_key(&mut server).await;
    let mut made = Vec::new();
    for rate in ["2/m", "20/s", "600/m", "off"] {
        let (ok, stdout, stderr) = cli(
            dir.path(),
            &[
                "keys",
                "create",
                "--name",
                rate,
                "--scope",
                "read",
                "--rate-limit",
                rate,
            ],
        )
        .await;
        assert!(ok, "--rate-limit {rate}: {stderr}");
        made.push(stdout.trim().to_string());
    }
    let (ok, _, stderr) = cli(
        dir.path(),
        &[
            "keys",
            "create",
            "--name",
            "bare",
            "--scope",
            "read",
            "--rate-limit",
            "20",
        ],
    )
    .await;
    assert!(!ok && stderr.contains("100/s"), "{stderr}");

    let (ok, listing, _) = cli(dir.path(), &["keys", "list", "--json"]).await;
    assert!(ok);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listing).unwrap();
    for rate in ["2/m", "20/s", "600/m", "off"] {
        let key = listed.iter().find(|k| k["name"] == rate).unwrap();
        assert_eq!(key["rate_limit"], rate);
    }

    // Two a minute: the third request within the minute is refused, although the server's
    // own default (100/s) would have admitted it. Windows start on the minute: not near
    // its end, so the three fall in one.
    let into_minute = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if into_minute > 50 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute)).await;
    }
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/revenue/customers", server.base);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = http.get(&url).bearer_auth(&made[0]).send().await.unwrap();
        statuses.push(r.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}
