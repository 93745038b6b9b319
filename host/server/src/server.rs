use std::future::Future;
use std::time::Duration;

use axum::Router;
use hephaestus_api::{AppState, jobs};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves `router` (built on `state`) on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (at most `grace`), stops background jobs and closes the pools.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let (stop_jobs, jobs_rx) = watch::channel(false);
    let jobs = jobs::spawn(state.clone(), jobs_rx);
    let store = state.store.clone();

    let (draining_tx, mut draining_rx) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        let _ = draining_tx.send(true);
    };
    let serve = axum::serve(listener, router).with_graceful_shutdown(signal);
    let serve = tokio::spawn(async move { serve.await });

    // The drain has a deadline: a client that never finishes must not keep the host alive.
    let deadline = async {
        let _ = draining_rx.wait_for(|draining| *draining).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = serve => result??,
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
