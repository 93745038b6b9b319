//! Clients that hold connections without using them: trickling headers, going silent
//! part-way, opening and saying nothing, opening more than the server takes. Each costs a
//! bounded amount: the header-read timeout closes them, and the connection cap keeps the
//! rest waiting in the backlog.

use std::time::{Duration, Instant};

use hephaestus::server::{self, Connections};
use hephaestus_api::AppState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::common::{Db, TestDb, test_config};

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Short timeouts, room for `max_connections`.
fn short(max_connections: usize) -> Connections {
    Connections {
        header_read_timeout: HEADER_READ_TIMEOUT,
        idle_timeout: Duration::from_secs(2),
        max_connections,
    }
}

/// A host treating connections as `connections` says; its address, and the sender that
/// stops it when dropped.
async fn host(connections: Connections) -> (String, TestDb, oneshot::Sender<()>) {
    let db = TestDb::new(Db::Sqlite).await;
    let store = db.store().await;
    let state = AppState::new(store, test_config()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server::run_with(
        listener,
        state.clone(),
        hephaestus_api::app(state),
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
        connections,
    ));
    (addr, db, stop)
}

/// Whether the server has closed `conn` (end of stream or a reset), reading what it sent.
async fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    match tokio::time::timeout(wait, conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        // Bytes (a response): keep reading until it closes or the wait ends.
        Ok(Ok(_)) => Box::pin(closed_within(conn, wait)).await,
        Err(_) => false,
    }
}

/// Polls `conn` until the server closes it; how long that took, or a panic after `deadline`.
async fn closed_after(conn: &mut TcpStream, since: Instant, deadline: Duration) -> Duration {
    while !closed_within(conn, Duration::from_millis(50)).await {
        assert!(
            since.elapsed() < deadline,
            "the connection is still open after {:?}",
            since.elapsed()
        );
    }
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_headers_are_cut_off_at_the_header_read_timeout() {
    let (addr, _db, _stop) = host(short(64)).await;
    let deadline = HEADER_READ_TIMEOUT + Duration::from_secs(2);

    // Part of a request, then silence.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let opened = Instant::now();
    silent
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_after(&mut silent, opened, deadline).await;
    assert!(took >= HEADER_READ_TIMEOUT / 2, "closed after {took:?}");

    // One byte of header every 200 ms: never complete, always busy.
    let mut trickle = TcpStream::connect(&addr).await.unwrap();
    let opened = Instant::now();
    trickle
        .write_all(b"GET /health HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    loop {
        if trickle.write_all(b"a").await.is_err()
            || closed_within(&mut trickle, Duration::from_millis(200)).await
        {
            break;
        }
        assert!(
            opened.elapsed() < deadline,
            "a trickling client is still connected after {:?}",
            opened.elapsed()
        );
    }

    // A connection that never sends anything.
    let mut mute = TcpStream::connect(&addr).await.unwrap();
    closed_after(&mut mute, Instant::now(), deadline).await;

    // A complete request is answered, and its kept-alive connection closes once idle.
    let mut ok = TcpStream::connect(&addr).await.unwrap();
    ok.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = ok.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    closed_after(&mut ok, Instant::now(), deadline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_for_a_free_one() {
    let (addr, _db, _stop) = host(short(2)).await;
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        holders.push(c);
    }
    // The third is connected (the kernel's backlog) but not served while both are held.
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let sent = Instant::now();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer))
        .await
        .expect("the third connection was never served")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // It was served only once a held connection had been closed by the timeout.
    let mut freed = 0;
    for c in &mut holders {
        if closed_within(c, Duration::from_millis(10)).await {
            freed += 1;
        }
    }
    assert!(
        freed >= 1,
        "the third connection was served after {:?} with both held ones open",
        sent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_doing_nothing_close_at_the_idle_timeout() {
    // The header-read timeout is far off: what closes these is the idle timeout.
    let idle = Duration::from_secs(1);
    let (addr, _db, _stop) = host(Connections {
        header_read_timeout: Duration::from_secs(60),
        idle_timeout: idle,
        max_connections: 64,
    })
    .await;
    let deadline = idle + Duration::from_secs(3);

    let mut mute = TcpStream::connect(&addr).await.unwrap();
    let took = closed_after(&mut mute, Instant::now(), deadline).await;
    assert!(took >= idle / 2, "closed after {took:?}");

    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    let took = closed_after(&mut kept, answered, deadline).await;
    assert!(took >= idle / 2, "closed {took:?} after its answer");
}
