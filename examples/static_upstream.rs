//! A stand-in for api.notion.com that answers every request at once with the same 1 KB user
//! object: the upstream of the load benchmark (`bench/load.py`), fast enough that the proxy
//! in front of it is what gets measured.
//!
//! `cargo run --release --example static_upstream -- 127.0.0.1:9000`

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(listen) = std::env::args().nth(1) else {
        return Err("usage: static_upstream LISTEN_ADDR".into());
    };
    let body = Bytes::from(format!(
        r#"{{"object":"user","id":"bench","type":"bot","name":"{}"}}"#,
        "x".repeat(900)
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut res = http::Response::new(Full::new(body));
                        res.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
