//! PostgreSQL stopped and started under load, on a cluster this test owns (`initdb` and
//! `pg_ctl` in a temporary folder, on a free port; never the machine's shared server).
//! While it is down every request is answered 503 `service_unavailable` with `Retry-After`
//! (never 500), none waits much longer than the pool's acquire timeout, and `/ready` says so
//! at once; once it is back the host serves within a second; every acknowledged write is
//! there, and every refused one succeeds when retried with its key.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{TestDb, TestServer, test_config};

/// The pool's default acquire timeout: the longest a request may wait for the database.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Scheduling slack on a busy 2-core machine on top of it.
const SLACK: Duration = Duration::from_millis(1000);
/// How soon after the database is back the host must serve again.
const RECOVERY: Duration = Duration::from_secs(1);

/// A PostgreSQL cluster of the test's own, stopped (fast) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// `initdb` refuses to run as root: then the cluster belongs to the `postgres` user.
    as_postgres: bool,
}

impl Cluster {
    fn create() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        let home = dir.path().join("pg");
        std::fs::create_dir(&home).unwrap();
        if as_postgres {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            run(Command::new("chown").arg("postgres:postgres").arg(&home));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = cluster.data();
        run(cluster
            .tool("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data));
        cluster
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    fn data(&self) -> PathBuf {
        self.home().join("data")
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.home().display()
        );
        run(self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.home().join("log"))
            .args(["-o", &options, "-w", "-t", "60", "start"]));
    }

    fn stop(&self) {
        run(self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"]));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The newest PostgreSQL server binaries installed (`/usr/lib/postgresql/N/bin`), or those
/// `TEST_PG_BIN` names.
fn postgres_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    newest
        .map(|(_, bin)| bin)
        .expect("this test runs a PostgreSQL cluster of its own: install the PostgreSQL server (initdb, pg_ctl under /usr/lib/postgresql/N/bin) or set TEST_PG_BIN")
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One answered request of the load.
#[derive(Debug)]
struct Answer {
    sent: Instant,
    took: Duration,
    status: StatusCode,
    code: String,
    retry_after: bool,
}

/// A write of the load: where it went, with which key and body.
#[derive(Debug, Clone)]
struct Write {
    path: &'static str,
    key: String,
    body: serde_json::Value,
}

#[derive(Debug, Default)]
struct Outcome {
    answers: Vec<Answer>,
    /// Writes acknowledged with 201, and the id of what they made.
    created: Vec<(Write, String)>,
    /// Writes refused with 503, to retry with their keys.
    refused: Vec<Write>,
}

const CUSTOMERS: &str = "/api/v1/revenue/customers";
const PAYMENTS: &str = "/api/v1/revenue/payments";

/// Creates customers and charges `customer` (each write with its own Idempotency-Key), and
/// lists customers, until `stop`.
async fn load(
    s: Arc<TestServer>,
    customer: String,
    worker: usize,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Outcome>>,
) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let key = format!("drill-{worker}-{i}");
        let write = match i % 3 {
            0 => None,
            1 => Some(Write {
                path: CUSTOMERS,
                body: json!({ "email": format!("{key}@example.com") }),
                key,
            }),
            _ => Some(Write {
                path: PAYMENTS,
                body: json!({ "customer_id": customer, "amount": 10, "currency": "usd",
                              "payment_method": "pm_card_visa", "description": key }),
                key,
            }),
        };
        let sent = Instant::now();
        let request = match &write {
            Some(w) => s
                .client
                .post(s.url(w.path))
                .header("Idempotency-Key", &w.key)
                .json(&w.body),
            None => s.client.get(s.url("/api/v1/revenue/customers?limit=5")),
        };
        let response = request.bearer_auth(&s.admin).send().await.unwrap();
        let took = sent.elapsed();
        let status = response.status();
        let retry_after = response.headers().contains_key("retry-after");
        let value: serde_json::Value = response.json().await.unwrap_or(json!(null));
        let code = value["error"]["code"].as_str().unwrap_or("").to_string();
        let mut out = out.lock().unwrap();
        if let Some(w) = write {
            if status == StatusCode::CREATED {
                out.created
                    .push((w, value["id"].as_str().unwrap().to_string()));
            } else {
                out.refused.push(w);
            }
        }
        out.answers.push(Answer {
            sent,
            took,
            status,
            code,
            retry_after,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_under_load() {
    let cluster = Cluster::create();
    cluster.start();
    let db = TestDb {
        url: cluster.url(),
        schema: None,
        _dir: tempfile::tempdir().unwrap(),
    };
    let s = Arc::new(TestServer::start_full(db, test_config(), Router::new()).await);
    let customer = s.create_customer("payer@example.com").await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let load = load(
                s.clone(),
                customer.clone(),
                w,
                stop.clone(),
                outcome.clone(),
            );
            tokio::spawn(load)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;

    cluster.stop();
    let down_at = Instant::now();
    // `/ready` turns at once: a refused connection needs no timeout to be noticed.
    let asked = Instant::now();
    assert_eq!(s.status_of("/ready").await, StatusCode::SERVICE_UNAVAILABLE);
    let ready_took = asked.elapsed();
    assert!(
        ready_took < Duration::from_millis(500),
        "/ready took {ready_took:?}"
    );
    // Long enough for requests sent while it is down to wait out the acquire timeout and
    // be answered before it returns.
    tokio::time::sleep(2 * ACQUIRE_TIMEOUT + Duration::from_millis(1000)).await;

    let starting = Instant::now();
    cluster.start();
    let up_at = Instant::now();
    let start_took = up_at - starting;
    // Served again: a fresh write succeeds, polled until the deadline.
    let mut recovered = None;
    let mut n = 0;
    while recovered.is_none() {
        n += 1;
        let r = s
            .post(
                &s.admin,
                CUSTOMERS,
                &json!({ "email": format!("probe-{n}@example.com") }),
                None,
            )
            .await;
        if r.status == StatusCode::CREATED {
            recovered = Some(up_at.elapsed());
        } else {
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
            assert!(
                up_at.elapsed() < RECOVERY,
                "still {} {} {:?} after PostgreSQL came back",
                r.status,
                r.body,
                up_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let recovered = recovered.unwrap();
    assert_eq!(s.status_of("/ready").await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let outcome = std::mem::take(&mut *outcome.lock().unwrap());
    let mut unavailable = 0;
    let mut max_took = Duration::ZERO;
    let mut max_took_down = Duration::ZERO;
    let mut while_down = 0;
    for a in &outcome.answers {
        max_took = max_took.max(a.took);
        assert!(
            a.status.is_success() || a.status == StatusCode::SERVICE_UNAVAILABLE,
            "{} {} (sent {:?} after the stop)",
            a.status,
            a.code,
            a.sent.checked_duration_since(down_at)
        );
        if a.status == StatusCode::SERVICE_UNAVAILABLE {
            unavailable += 1;
            assert_eq!(a.code, "service_unavailable");
            assert!(a.retry_after, "a 503 without Retry-After");
        }
        // Sent and answered while the server was down: nothing could succeed.
        if a.sent > down_at && a.sent + a.took < starting {
            max_took_down = max_took_down.max(a.took);
            while_down += 1;
            assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        }
        assert!(
            a.took < ACQUIRE_TIMEOUT + SLACK,
            "a request took {:?}",
            a.took
        );
    }
    assert!(
        while_down > 0,
        "no request was both sent and answered while the server was down"
    );

    // Every acknowledged write survived, and a retry with its key answers the same object.
    for (w, id) in &outcome.created {
        let r = s.get(&s.admin, &format!("{}/{id}", w.path)).await;
        assert_eq!(r.status, StatusCode::OK, "{id}: {}", r.body);
        let again = s.post(&s.admin, w.path, &w.body, Some(&w.key)).await;
        assert_eq!(again.body["id"], id.as_str(), "{}: {}", w.key, again.body);
    }
    // Every refused write runs when retried with its key (its claim was released once the
    // database was back), and none of them ran twice.
    let deadline = Instant::now() + Duration::from_secs(10);
    for w in &outcome.refused {
        loop {
            let r = s.post(&s.admin, w.path, &w.body, Some(&w.key)).await;
            if r.status == StatusCode::CREATED {
                break;
            }
            assert_eq!(r.code(), "idempotency_key_in_use", "{}: {}", w.key, r.body);
            assert!(Instant::now() < deadline, "{} still claimed", w.key);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let writes = |path| {
        outcome
            .created
            .iter()
            .filter(|(w, _)| w.path == path)
            .count()
            + outcome.refused.iter().filter(|w| w.path == path).count()
    };
    let customers = s.count("customers WHERE email LIKE 'drill-%'").await;
    assert_eq!(
        customers as usize,
        writes(CUSTOMERS),
        "one customer per write"
    );
    let payments = s.count("payments WHERE description LIKE 'drill-%'").await;
    assert_eq!(payments as usize, writes(PAYMENTS), "one payment per write");
    eprintln!(
        "drill: {} requests, {} answered 503 ({} sent and answered while PostgreSQL was down; \
         {} writes retried), max latency {:?} (while down {:?}), /ready 503 in {:?}, \
         pg_ctl start {:?}, served again {:?} after it returned",
        outcome.answers.len(),
        unavailable,
        while_down,
        outcome.refused.len(),
        max_took,
        max_took_down,
        ready_took,
        start_took,
        recovered
    );
    drop(s);
}
