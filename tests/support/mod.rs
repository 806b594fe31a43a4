//! Test harness: a fake Notion upstream, the real gateway in front of it, and clients.
//!
//! ```ignore
//! let notion = FakeNotion::start().await;
//! let gw = TestGateway::start(config_for(&notion)).await;
//! let resp = gw.get("/v1/users/me").await;
//! assert_eq!(resp.status, 200);
//! ```
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod connect_proxy;
pub mod fake_notion;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use notion_gateway::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

#[allow(unused_imports)]
pub use fake_notion::{FakeNotion, Fault, Received, Reply};

pub type ClientBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// A gateway configuration pointing at `notion`, otherwise the embedded defaults, except that
/// workspace discovery is off: its extra `GET /v1/users/me` per token would be in every test's
/// count of upstream requests. The tests of discovery switch it on.
pub fn config_for(notion: &FakeNotion) -> Config {
    let mut cfg = Config::default();
    cfg.upstream.base = format!("{}/", notion.url()).parse().unwrap();
    cfg.limits.discover_workspaces = false;
    cfg
}

/// The values of the `integration` label in a `/metrics` text.
pub fn integration_labels(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_once("integration=\""))
        .filter_map(|(_, rest)| rest.split_once('"'))
        .map(|(v, _)| v.to_string())
        .collect()
}

/// SHA-256 of a (fake) token or key, as the configuration holds it.
pub fn sha256(secret: &str) -> [u8; 32] {
    sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        secret.as_bytes(),
    ))
    .into()
}

/// A configured integration `name` for `token` at the standard plan's budget; `held`: the
/// gateway holds the token (as `token_env`/`token_file` would), so gateway keys can use it.
pub fn integration(name: &str, token: &str, held: bool) -> notion_gateway::config::Integration {
    notion_gateway::config::Integration {
        name: name.into(),
        token_sha256: sha256(token),
        plan: notion_gateway::config::Plan::Standard,
        per_minute: 180,
        smoothing: None,
        workspace: None,
        token: held.then(|| notion_gateway::config::HeldToken::new(token).unwrap()),
    }
}

/// The real gateway (`notion_gateway::run`) on an ephemeral port of 127.0.0.1.
pub struct TestGateway {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), notion_gateway::server::RunError>>>,
    client: Client<HttpConnector, ClientBody>,
}

impl TestGateway {
    pub async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(notion_gateway::run(config, listener, async move {
            let _ = stopped.await;
        }));
        TestGateway {
            addr,
            stop: Some(stop),
            task: Some(task),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A client of a gateway that runs elsewhere (the binary, started by the test).
    pub fn attach(addr: SocketAddr) -> Self {
        TestGateway {
            addr,
            stop: None,
            task: None,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Starts the shutdown (as SIGTERM would) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Shuts down and waits until `run` returned.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        self.wait_stopped().await;
    }

    pub async fn wait_stopped(&mut self) {
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    /// A request to the gateway with the default test token. Tokens in tests are fake.
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        self.request_as(method, path, "ntn_test_token_0001")
    }

    /// A request to the gateway with `token` as its bearer token.
    pub fn request_as(&self, method: Method, path: &str, token: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("authorization", format!("Bearer {token}"))
    }

    pub async fn send(&self, req: Request<ClientBody>) -> Resp {
        let resp = self.client.request(req).await.expect("gateway answered");
        Resp::read(resp).await
    }

    /// Like [`send`](Self::send), as a `'static` future to spawn beside the test's own steps.
    pub fn send_detached(
        &self,
        req: Request<ClientBody>,
    ) -> impl std::future::Future<Output = Resp> + Send + 'static {
        let client = self.client.clone();
        async move {
            let resp = client.request(req).await.expect("gateway answered");
            Resp::read(resp).await
        }
    }

    /// Each caller in turn (5 ms apart) queues `each` GETs `/v1/users/<caller>-<i>` named by
    /// `X-Gateway-Client`; waits until every one was answered 200.
    pub async fn send_as_callers(&self, callers: &[&str], each: usize) {
        let mut calls = Vec::new();
        for caller in callers {
            for i in 0..each {
                let req = self
                    .request(Method::GET, &format!("/v1/users/{caller}-{i}"))
                    .header("x-gateway-client", *caller)
                    .body(empty())
                    .unwrap();
                calls.push(tokio::spawn(self.send_detached(req)));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        for c in calls {
            assert_eq!(c.await.unwrap().status, 200);
        }
    }

    /// Sends and returns the response head with its body still streaming.
    pub async fn send_streaming(
        &self,
        req: Request<ClientBody>,
    ) -> http::Response<hyper::body::Incoming> {
        self.client.request(req).await.expect("gateway answered")
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.request(Method::GET, path).body(empty()).unwrap())
            .await
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> Resp {
        let req = self
            .request(Method::POST, path)
            .header("content-type", "application/json")
            .body(full(body.to_string()))
            .unwrap();
        self.send(req).await
    }
}

pub fn empty() -> ClientBody {
    full(Bytes::new())
}

pub fn full(b: impl Into<Bytes>) -> ClientBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

/// A request body the test feeds chunk by chunk.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, ClientBody) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(hyper::body::Frame::data(b)), rx))
    });
    (tx, http_body_util::StreamBody::new(stream).boxed_unsync())
}

/// A whole response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub async fn read(resp: http::Response<hyper::body::Incoming>) -> Self {
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("whole body").to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the gateway's own Notion-shaped error and returns it.
    pub fn assert_gateway_error(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        assert_eq!(v["object"], "error");
        assert_eq!(v["status"], status);
        assert_eq!(v["code"], code);
        assert!(
            notion_gateway::error::SDK_CODES.contains(&code),
            "{code} is not a code both SDKs know"
        );
        let msg = v["message"].as_str().unwrap();
        assert!(msg.starts_with("notion-gateway: "), "{msg}");
        let rid = v["request_id"].as_str().unwrap();
        assert!(!rid.is_empty());
        assert_eq!(Some(rid), self.header("x-request-id"));
        v
    }
}

/// Writes raw bytes to `addr` and reads until the server closes the connection (send
/// `Connection: close`), or `within` passes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], within: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON body of a raw HTTP/1.1 response.
pub fn raw_json(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("no JSON body ({e}): {response}"))
}

/// A port on 127.0.0.1 where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// A listener whose accept queue is full: the kernel drops further SYNs, so a connect() to it
/// hangs like one to a black-holed host, until [`BlackHole::open`] starts accepting.
pub struct BlackHole {
    pub addr: SocketAddr,
    listener: socket2::Socket,
    _fillers: Vec<socket2::Socket>,
}

impl BlackHole {
    pub fn new() -> Self {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        listener.listen(1).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let fillers = (0..8)
            .map(|_| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                s.set_nonblocking(true).unwrap();
                let _ = s.connect(&addr.into());
                s
            })
            .collect();
        BlackHole {
            addr,
            listener,
            _fillers: fillers,
        }
    }

    /// The fake Notion takes the listener over and accepts (the fillers' connections too;
    /// they send nothing).
    pub fn open(self) -> FakeNotion {
        let std_listener: std::net::TcpListener = self.listener.into();
        std_listener.set_nonblocking(true).unwrap();
        FakeNotion::serve(tokio::net::TcpListener::from_std(std_listener).unwrap())
    }
}

/// A fake Notion behind TLS with a certificate from a fresh test CA. Returns the CA's PEM.
pub async fn tls_notion() -> (std::net::SocketAddr, String, tokio::task::JoinHandle<()>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();

    let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"{\"object\":\"user\"}")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca.pem(), task)
}

/// A plain HTTP/1.0 GET to `127.0.0.1:port`: status and body, or `None` if nothing listens.
pub async fn raw_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
