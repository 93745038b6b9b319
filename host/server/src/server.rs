use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hephaestus_api::{AppState, jobs};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// How the server treats connections, so that clients that hold them without using them (a
/// slowloris trickling headers, a connection left open and silent) cost a bounded amount.
#[derive(Debug, Clone, Copy)]
pub struct Connections {
    /// How long a client has to send a request's headers, counted from when the server
    /// starts waiting for them: the connection opening, or the previous response on a
    /// kept-alive connection (so an idle kept-alive connection closes after this long too).
    pub header_read_timeout: Duration,
    /// How long a connection may go with no request being handled and nothing received or
    /// sent (a client that stops reading its response, or goes silent mid-request-line).
    pub idle_timeout: Duration,
    /// Open connections at most; more wait in the listen backlog until one closes.
    pub max_connections: usize,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// Serves `router` (built on `state`) on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (at most `grace`), stops background jobs and closes the pools.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    run_with(
        listener,
        state,
        router,
        shutdown,
        grace,
        Connections::default(),
    )
    .await
}

/// [`run`] with the given connection limits.
pub async fn run_with(
    listener: TcpListener,
    state: AppState,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    connections: Connections,
) -> anyhow::Result<()> {
    // Registered before the first request: a claim stamped by a process not known to be alive
    // would be taken for an orphan.
    if let Err(e) = hephaestus_store::instances::beat(&state.store).await {
        tracing::warn!(error = %e, "could not register this host; its claims are taken over until it can");
    }
    let (stop_jobs, jobs_rx) = watch::channel(false);
    let jobs = jobs::spawn(state.clone(), jobs_rx);
    let store = state.store.clone();

    let (draining_tx, mut draining_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        let _ = draining_tx.send(true);
    });
    let serve = tokio::spawn(serve(listener, router, connections, draining_rx.clone()));

    // The drain has a deadline: a client that never finishes must not keep the host alive.
    let deadline = async {
        let _ = draining_rx.wait_for(|draining| *draining).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = serve => result?,
        () = deadline => tracing::warn!(grace_secs = grace.as_secs(), "drain deadline passed; exiting with requests in flight"),
    }

    let _ = stop_jobs.send(true);
    if let Err(e) = jobs.await {
        tracing::warn!(error = %e, "background jobs ended abnormally");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Accepts connections until `draining` turns true, then waits for the open ones to finish
/// their requests. Each connection holds a permit of `max_connections` for its lifetime.
async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Connections,
    mut draining: watch::Receiver<bool>,
) {
    // A million is the setting's own bound; it keeps the count a `u32` for the final wait.
    let max = limits.max_connections.clamp(1, 1_000_000);
    let permits = Arc::new(Semaphore::new(max));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = drained(&mut draining) => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = drained(&mut draining) => break,
        };
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: tcp,
            activity: activity.clone(),
        });
        let app = router.clone();
        let in_flight = activity.clone();
        let service = hyper::service::service_fn(move |req: axum::http::Request<Incoming>| {
            let request = in_flight.request();
            let app = app.clone();
            async move {
                let response = app.oneshot(req.map(axum::body::Body::new)).await;
                drop(request);
                response
            }
        });
        let conn = http.serve_connection(io, service);
        let mut draining = draining.clone();
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = drained(&mut draining), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    () = activity.idle_for(idle_timeout) => {
                        tracing::debug!("closing a connection idle for too long");
                        break;
                    }
                }
            }
        });
    }
    drop(listener);
    // Every permit back: every connection has closed.
    let _ = permits
        .acquire_many(u32::try_from(max).unwrap_or(1_000_000))
        .await;
}

/// Resolves once the server is draining. (The `watch::Ref` that `wait_for` returns is not
/// `Send`, so it must not be held across the await that follows a `select!`.)
async fn drained(draining: &mut watch::Receiver<bool>) {
    let _ = draining.wait_for(|d| *d).await;
}

/// Errors from `accept` that concern one connection are skipped; others (out of file
/// descriptors) are waited out rather than spun on.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// When a connection last moved a byte, and how many of its requests are being handled.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened`.
    last_ms: AtomicU64,
    requests: AtomicUsize,
}

/// Counts a request as being handled until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            requests: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn request(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Resolves once no request has been handled and nothing moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            tokio::time::sleep_until(last + timeout).await;
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if self.requests.load(Ordering::Relaxed) == 0 && last.elapsed() >= timeout {
                return;
            }
            if self.requests.load(Ordering::Relaxed) > 0 {
                // A request is being handled (its own timeout bounds it): look again later.
                tokio::time::sleep(timeout).await;
            }
        }
    }
}

/// A connection's socket that notes when bytes move.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A future that resolves on SIGTERM or Ctrl-C. The handlers are installed by this call,
/// not when the future is first polled, so a signal that arrives as soon as the server says
/// it is listening is already a graceful shutdown rather than the default instant death.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
