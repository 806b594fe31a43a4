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
//! * at most `server.max_connections` data-plane connections ([`crate::connections`]): at the
//!   limit the oldest idle one (keep-alive, or still without a complete request head) is closed
//!   to admit the new client; when every one is busy, a small reserve still answers the
//!   gateway's own endpoints, so health probes never wait for the data plane.
//!
//! Shutdown (docs/behaviour.md §6): when `shutdown` resolves, the listener is closed (new
//! connections are refused, which is what tells a load balancer to stop sending), idle
//! connections are closed (keep-alive ones, and ones that never sent a complete head) and busy
//! ones finish their current request. Requests still without a response when
//! `server.drain_timeout` passes are answered 503 `service_unavailable`; after a short grace
//! for those answers to be written, the remaining connections (streams still running) are
//! closed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;

use crate::app::App;
use crate::config::{Config, MAX_HEAD_BUFFER};
use crate::connections::{Registry, Tracked, CLOSE_GRACE, RESERVE};
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
    let (_, reloads) = mpsc::unbounded_channel();
    run_reloading(config, listener, shutdown, reloads).await
}

/// Reloaded configurations, or why a reload could not be read (the binary sends one per
/// SIGHUP).
pub type Reloads = mpsc::UnboundedReceiver<Result<Config, String>>;

/// [`run`], applying each configuration that arrives on `reloads` ([`Gateway::reload`]).
pub async fn run_reloading(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    reloads: Reloads,
) -> Result<(), RunError> {
    let admin = match config.server.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::AdminListen(addr, e))?,
        ),
        None => None,
    };
    serve_all(config, listener, admin, shutdown, reloads).await
}

/// [`run`] with the admin listener already bound (tests bind port 0 and read it back).
pub async fn run_with_admin(
    config: Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let (_, reloads) = mpsc::unbounded_channel();
    serve_all(config, listener, admin, shutdown, reloads).await
}

async fn serve_all(
    config: Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
    mut reloads: Reloads,
) -> Result<(), RunError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain_timeout = config.server.drain_timeout;
    let gw = Arc::new(Gateway::new(config, stop_rx).map_err(RunError::Upstream)?);
    let app = Arc::new(App::new(gw.clone()));
    // Reloads are applied on their own task; none of them waits for a request or a lock held
    // across requests.
    let _reloader = {
        let gw = gw.clone();
        AbortOnDrop(tokio::spawn(async move {
            while let Some(reloaded) = reloads.recv().await {
                gw.reload(reloaded);
            }
        }))
    };
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

    // One slot per client connection: at the limit the oldest idle connection makes room; when
    // all are busy the reserve serves probes; when that is busy too, the loop stops accepting
    // and new clients wait in the listen backlog.
    let slots = Registry::new(gw.config.server.max_connections, RESERVE);
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
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // At the limit this closes the oldest idle connection; with every connection
                // busy (reserve included) it waits, and new clients wait in the backlog.
                let conn = tokio::select! {
                    c = slots.admit_wait() => Arc::new(c),
                    () = &mut shutdown => break,
                };
                let _ = stream.set_nodelay(true);
                let mut io = TimeoutStream::new(stream);
                io.set_write_timeout(Some(write_timeout));
                let io = TokioIo::new(Box::pin(io));
                let app = app.clone();
                let ip = peer.ip();
                let svc = {
                    let conn = conn.clone();
                    hyper::service::service_fn(move |req| {
                        // Busy from here until hyper has taken the whole response body.
                        let busy = conn.begin();
                        let app = app.clone();
                        let conn = conn.clone();
                        async move {
                            let resp = app.handle(req, ip, &conn).await;
                            Ok::<_, Infallible>(resp.map(|b| Tracked::new(b, busy)))
                        }
                    })
                };
                let served = http.serve_connection(io, svc);
                connections.spawn(serve(served, conn, peer));
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
    // Every connection closes once it is idle.
    slots.close_all();
    async fn all_closed(connections: &mut JoinSet<()>) {
        while connections.join_next().await.is_some() {}
    }
    if tokio::time::timeout(drain_timeout, all_closed(&mut connections))
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed: answering the remaining requests 503");
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(HARD_STOP_GRACE, all_closed(&mut connections)).await;
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    tracing::info!("shutdown complete");
    Ok(())
}

/// Runs one client connection until it ends, is chosen for closing to admit another client, or
/// the gateway drains. Closing: a connection that never received a request is dropped at once
/// (nothing to flush); otherwise hyper's graceful shutdown closes it after the request in
/// progress, or at once when idle, and it is dropped if still open after [`CLOSE_GRACE`]
/// without a request in progress.
async fn serve<I, S, B>(
    served: http1::Connection<I, S>,
    conn: Arc<crate::connections::Conn>,
    peer: std::net::SocketAddr,
) where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(served);
    let grace = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(grace);
    let mut closing = false;
    let result = loop {
        tokio::select! {
            biased;
            r = served.as_mut() => break r,
            () = conn.closing(), if !closing => {}
            () = grace.as_mut(), if closing => {
                if !conn.is_busy() {
                    return;
                }
                // Mid-request: hyper closes it after the response.
                break served.as_mut().await;
            }
        }
        // Chosen for closing to admit another client, or draining.
        closing = true;
        served.as_mut().graceful_shutdown();
        if !conn.is_busy() && !conn.served_any() {
            return;
        }
        grace
            .as_mut()
            .reset(tokio::time::Instant::now() + CLOSE_GRACE);
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

/// Aborts a background task when its owner goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
