//! Sizes of the futures a request in progress is held in (for `bench/queue_memory.py`'s
//! breakdown): the gateway's per-request future (`App::handle`, which hyper boxes once per
//! request) and the proxy pipeline inside it (`proxy::handle`). Creates them for a request
//! received over an in-memory connection and prints `std::mem::size_of_val` of each, without
//! polling them.
//!
//! `cargo run --release --example future_sizes`

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let gw = Arc::new(notion_gateway::gateway::Gateway::new(
            notion_gateway::Config::default(),
            stop_rx,
        )?);
        let app = Arc::new(notion_gateway::app::App::new(gw.clone()));
        let slots = notion_gateway::connections::Registry::new(10, 1);
        let conn = Arc::new(slots.admit().ok_or("no connection slot")?);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let svc = hyper::service::service_fn(move |req| {
            let (app, conn, gw) = (app.clone(), conn.clone(), gw.clone());
            async move {
                let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
                if req.uri().path() == "/v1/users/me" {
                    let fut = app.handle(req, peer, &conn);
                    println!(
                        "App::handle future (boxed by hyper per request): {} bytes",
                        std::mem::size_of_val(&fut)
                    );
                } else {
                    let id = http::HeaderValue::from_static("size-probe");
                    let fut = notion_gateway::proxy::handle(&gw, req, peer, &id);
                    println!(
                        "proxy::handle future (inside it): {} bytes",
                        std::mem::size_of_val(&fut)
                    );
                }
                Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
            }
        });
        let served =
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(server), svc));
        let mut client = client;
        for path in ["/v1/users/me", "/v1/pages/x"] {
            client
                .write_all(
                    format!(
                        "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ntn_size\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await?;
            let mut buf = [0u8; 1024];
            let _ = client.read(&mut buf).await?;
        }
        drop(client);
        let _ = served.await;
        Ok(())
    })
}
