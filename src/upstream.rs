//! The only code that talks to Notion: the pooled HTTP client, its connector, and the
//! classification of transport failures.
//!
//! * Pool: hyper-util's legacy client, HTTP/1.1 keep-alive, idle connections closed after
//!   `upstream.pool_idle_timeout` (the pool needs a timer for that, so one is set).
//! * TLS: rustls with the web PKI roots plus `upstream.ca_bundle`; plain `http://` upstreams
//!   are allowed for tests and local fakes.
//! * Corporate proxy: when `upstream.proxy` (or `HTTPS_PROXY`, minus `NO_PROXY`) applies, the
//!   TCP stream is an HTTP CONNECT tunnel through it and TLS runs inside the tunnel.
//! * URIs: only [`Upstream::uri_for`] builds an upstream URI, always from the configured
//!   scheme and authority plus the caller's path and query. Nothing the caller sends can
//!   change the host that is contacted.
//!
//! What it does not do: retries, deadlines across attempts, pacing. A call here is one attempt.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::{error_chain, find_body_error, BoxError};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;

/// The request body type sent upstream.
pub type UpstreamBody = crate::body::RequestBody;

/// A configured upstream: where to go and how to get there.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<Connector>, UpstreamBody>,
    scheme: Scheme,
    authority: Authority,
    /// `Host` header value sent upstream.
    pub host: HeaderValue,
    /// For error messages: `https://api.notion.com`.
    display: Arc<str>,
    /// What the last attempts said about reachability, for `/readyz`.
    pub health: Arc<Health>,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, BoxError> {
        let scheme = cfg.base.scheme().cloned().unwrap_or(Scheme::HTTPS);
        let authority = cfg
            .base
            .authority()
            .cloned()
            .ok_or("upstream URL has no authority")?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = match &cfg.proxy {
            None => Connector::Direct(http),
            Some(p) => {
                let mut t = Tunnel::new(p.uri.clone(), http);
                if let Some(auth) = &p.authorization {
                    t = t.with_auth(auth.clone());
                }
                Connector::Tunnel(t)
            }
        };

        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in &cfg.extra_roots {
            roots.add(cert.clone())?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);

        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle)
            .build(https);

        let host = HeaderValue::from_str(authority.as_str())?;
        let display = format!("{scheme}://{authority}").into();
        Ok(Self {
            client,
            scheme,
            authority,
            host,
            display,
            health: Arc::new(Health::new()),
        })
    }

    /// The upstream URI for a caller's path and query: configured scheme and host, always.
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, GatewayError> {
        let pq = path_and_query
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // All three parts are already valid, so this cannot fail; if it ever did, the caller
        // would be told which path could not be forwarded (the text is made only then).
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| GatewayError::NotFound(path_and_query.map_or("/", |p| p.path()).into()))
    }

    /// Sends one attempt and waits for the response head.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, GatewayError> {
        let result = self.client.request(req).await;
        match result {
            Ok(resp) => {
                self.health.answered();
                Ok(resp)
            }
            Err(e) => {
                let err = self.classify(&e);
                if matches!(
                    err,
                    GatewayError::UpstreamConnect { .. }
                        | GatewayError::UpstreamTls { .. }
                        | GatewayError::UpstreamBroken(_)
                ) {
                    self.health.failed(err.reason());
                }
                Err(err)
            }
        }
    }

    /// A light request that proves the upstream answers: `GET /v1/users/me` without
    /// credentials (Notion answers 401 without doing any work). Recorded like any attempt.
    pub async fn probe(&self, timeout: Duration) {
        let Ok(uri) = self.uri_for(Some(&http::uri::PathAndQuery::from_static("/v1/users/me")))
        else {
            return;
        };
        let mut req = Request::new(UpstreamBody::Replayable(None));
        *req.uri_mut() = uri;
        req.headers_mut()
            .insert(http::header::HOST, self.host.clone());
        if tokio::time::timeout(timeout, self.send(req)).await.is_err() {
            self.health.failed("probe_timeout");
        }
    }

    /// Maps a client error to what the caller should be told.
    fn classify(&self, err: &hyper_util::client::legacy::Error) -> GatewayError {
        if let Some(b) = find_body_error(err) {
            return GatewayError::from(b);
        }
        let detail = chain(err);
        let upstream = self.display.to_string();
        if has_source::<rustls::Error>(err) {
            return GatewayError::UpstreamTls { upstream, detail };
        }
        if err.is_connect() {
            return GatewayError::UpstreamConnect { upstream, detail };
        }
        GatewayError::UpstreamBroken(detail)
    }
}

/// Reachability of the upstream as the last attempts saw it: any HTTP answer (even a 401)
/// proves it reachable; a refused, failed or broken connection does not.
pub struct Health {
    epoch: tokio::time::Instant,
    /// Milliseconds since `epoch` + 1 of the last answer / failure; 0: never.
    last_answer: std::sync::atomic::AtomicU64,
    last_failure: std::sync::atomic::AtomicU64,
    last_error: std::sync::Mutex<&'static str>,
}

/// What `/readyz` reports.
pub struct Reachability {
    pub ready: bool,
    /// How long ago the upstream last answered, if it ever did.
    pub last_answer_ago: Option<Duration>,
    /// Why the last failed attempt failed, when the last outcome was a failure.
    pub last_error: Option<&'static str>,
}

impl Health {
    fn new() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
            last_answer: Default::default(),
            last_failure: Default::default(),
            last_error: std::sync::Mutex::new(""),
        }
    }

    fn stamp(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn answered(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        // Skip the store when another answer was recorded this millisecond (hot path).
        let now = self.stamp();
        if self.last_answer.load(Relaxed) != now {
            self.last_answer.store(now, Relaxed);
        }
    }

    fn failed(&self, reason: &'static str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = reason;
        }
        self.last_failure
            .store(self.stamp(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether nothing was learned about the upstream for `quiet`.
    pub fn is_stale(&self, quiet: Duration) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self
            .last_answer
            .load(Relaxed)
            .max(self.last_failure.load(Relaxed));
        last == 0 || self.stamp().saturating_sub(last) > quiet.as_millis() as u64
    }

    pub fn reachability(&self) -> Reachability {
        use std::sync::atomic::Ordering::Relaxed;
        let (answer, failure) = (
            self.last_answer.load(Relaxed),
            self.last_failure.load(Relaxed),
        );
        let ready = answer >= failure && answer > 0;
        Reachability {
            ready,
            last_answer_ago: (answer > 0)
                .then(|| Duration::from_millis(self.stamp().saturating_sub(answer))),
            last_error: (!ready && failure > 0)
                .then(|| self.last_error.lock().map(|e| *e).unwrap_or("unknown")),
        }
    }
}

/// Every message in an error's source chain, deduplicated: "client error (Connect): tcp
/// connect error: Connection refused (os error 111)".
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in error_chain(err) {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn has_source<T: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    error_chain(err).any(|e| e.is::<T>())
}

/// TCP to the upstream, directly or through an HTTP CONNECT tunnel.
#[derive(Clone)]
pub enum Connector {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<Tcp, BoxError>> + Send>>;

impl tower::Service<Uri> for Connector {
    type Response = Tcp;
    type Error = BoxError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Connector::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Connector::Tunnel(c) => c.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Connector::Direct(c) => {
                let fut = c.call(dst);
                Box::pin(async move { fut.await.map(|inner| Tcp { inner }).map_err(Into::into) })
            }
            Connector::Tunnel(c) => {
                let fut = c.call(dst);
                Box::pin(async move { fut.await.map(|inner| Tcp { inner }).map_err(Into::into) })
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The TCP stream to the upstream, as hyper-util's, minus the connection's addresses:
    /// hyper-util's `TcpStream` reports them (`HttpInfo`), and the pool then inserts a copy
    /// into every response's extensions — a map and a box allocated and freed per request,
    /// for something the gateway never reads (README, "Instructions per request").
    pub struct Tcp {
        #[pin]
        inner: TokioIo<TcpStream>,
    }
}

impl Connection for Tcp {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
}
