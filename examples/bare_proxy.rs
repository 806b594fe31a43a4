//! The floor of the stack: the simplest hyper + hyper-util reverse proxy, with none of the
//! gateway's work (no log, guard, timeouts or header rules). Benchmarks run it beside the
//! gateway to tell the stack's own cost from ours (`bench/instructions.py`, README).
//!
//! `cargo run --release --example bare_proxy -- 127.0.0.1:8788 http://127.0.0.1:9000`

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: bare_proxy LISTEN_ADDR UPSTREAM_URL".into());
    };
    let upstream: http::Uri = upstream.parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        let client: Client<_, hyper::body::Incoming> = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build_http();
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    forward(client.clone(), upstream.clone(), req)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

async fn forward(
    client: Client<hyper_util::client::legacy::connect::HttpConnector, hyper::body::Incoming>,
    upstream: http::Uri,
    mut req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Body>, Infallible> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = upstream.scheme().cloned();
    parts.authority = upstream.authority().cloned();
    parts.path_and_query = req.uri().path_and_query().cloned();
    let response = match http::Uri::from_parts(parts) {
        Ok(uri) => {
            *req.uri_mut() = uri;
            client.request(req).await.ok()
        }
        Err(_) => None,
    };
    Ok(match response {
        Some(resp) => resp.map(|b| b.boxed_unsync()),
        None => {
            let mut resp =
                http::Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
            *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
            resp
        }
    })
}
