//! Accepting connections, serving them, and shutting down without dropping a request.
//!
//! [`run`] takes an already-bound listener and a shutdown future (mini-redis style), so tests
//! bind `127.0.0.1:0` and drive the real socket. Per connection:
//!
//! * hyper's HTTP/1 server with `header_read_timeout = server.idle_timeout`. hyper restarts that
//!   timer whenever the connection waits for a new request head, so it closes both slow-header
//!   (slowloris) clients and idle keep-alive connections.
//! * a socket write timeout of `server.body_idle_timeout` (tokio-io-timeout): a client that
//!   stops reading its response cannot hold the connection, the upstream stream and memory
//!   forever.
//! * at most `server.max_connections` connections at once (a semaphore permit each); at the
//!   limit the loop stops accepting and new clients wait in the kernel's listen backlog.
//!
//! Shutdown (PRODUCT.md P6): when `shutdown` resolves, the listener is closed (new connections
//! are refused, which is what tells a load balancer to stop sending), idle keep-alive connections are closed and busy ones finish
//! their current request. Requests still without a response when `server.drain_timeout` passes
//! are answered 503 `service_unavailable`; after a short grace for those answers to be written,
//! the remaining connections (streams still running) are closed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;

use crate::app::App;
use crate::config::{Config, MAX_HEAD_BUFFER};
use crate::gateway::Gateway;

/// After the drain deadline, how long 503 answers get to reach their callers.
const HARD_STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot set up the upstream client: {0}")]
    Upstream(crate::body::BoxError),
    #[error("cannot listen on {0} (server.admin_listen): {1}")]
    AdminListen(std::net::SocketAddr, std::io::Error),
}

/// Serves the gateway on `listener` until `shutdown` resolves, then drains. With
/// `server.admin_listen` set, binds it and serves `/metrics` and `/status` there.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let admin = match config.server.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::AdminListen(addr, e))?,
        ),
        None => None,
    };
    run_with_admin(config, listener, admin, shutdown).await
}

/// [`run`] with the admin listener already bound (tests bind port 0 and read it back).
pub async fn run_with_admin(
    config: Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain_timeout = config.server.drain_timeout;
    let gw = Arc::new(Gateway::new(config, stop_rx).map_err(RunError::Upstream)?);
    let app = Arc::new(App::new(gw.clone()));
    // The operator's endpoints on their own port: a plain axum server, stopped with `run`.
    let _admin = admin.map(|l| {
        tracing::info!(
            admin_listen = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "admin endpoints (/metrics, /status) listening"
        );
        let router = crate::app::admin_router(&gw);
        AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = axum::serve(l, router).await {
                tracing::warn!(error = %e, "admin listener failed");
            }
        }))
    });
    // Histograms keep raw samples until upkeep folds them into buckets: keep memory flat even
    // when nobody scrapes `/metrics`. Ends with `run`.
    let _upkeep = gw.metrics.clone().map(|handle| {
        AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        }))
    });

    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(gw.config.server.idle_timeout)
        .max_buf_size(MAX_HEAD_BUFFER)
        .keep_alive(true);
    let write_timeout = gw.config.server.body_idle_timeout;

    // One permit per client connection (mini-redis's pattern): at the limit the loop stops
    // accepting until a connection closes, and new clients wait in the listen backlog.
    let permits = Arc::new(Semaphore::new(gw.config.server.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        upstream = %gw.config.upstream.base,
        "notion-gateway listening"
    );

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            (accepted, permit) = async {
                // Owned permits cannot fail unless the semaphore is closed, which it never is.
                let permit = permits.clone().acquire_owned().await.ok();
                (listener.accept().await, permit)
            } => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let mut io = TimeoutStream::new(stream);
                io.set_write_timeout(Some(write_timeout));
                let io = TokioIo::new(Box::pin(io));
                let app = app.clone();
                let ip = peer.ip();
                let svc = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.handle(req, ip).await) }
                });
                let conn = graceful.watch(http.serve_connection(io, svc));
                connections.spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "client connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }

    drop(listener);
    tracing::info!(
        in_flight_connections = connections.len(),
        drain_timeout = ?drain_timeout,
        "shutting down: no longer accepting, draining"
    );
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    if tokio::time::timeout(drain_timeout, &mut drained)
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed: answering the remaining requests 503");
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(HARD_STOP_GRACE, &mut drained).await;
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    tracing::info!("shutdown complete");
    Ok(())
}

/// Aborts a background task when its owner goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
