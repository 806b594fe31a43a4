//! The floor for `bench/queue_memory.py`: a server that holds every request it receives without
//! answering, as the gateway holds a queued one, with none of the gateway's work.
//!
//! `cargo run --release --example hold_server -- 127.0.0.1:8788 MODE`, MODE one of:
//!
//! * `hyper`: hyper's HTTP/1 server, built as the gateway builds it (timer, header read
//!   timeout, `max_buf_size`), one task per connection; the service's future keeps the
//!   request and never resolves. What hyper and tokio hold for a request in progress.
//! * `hyper-boxed`: the same, and the service's future owns a heap block of `--hold` bytes
//!   (default 4096), touched: what a request future of that size adds.
//! * `tcp`: one task per connection that reads the request into a 1 KiB buffer and holds it:
//!   tokio's socket registration and task, no HTTP.
//!
//! Prints `ready` on stdout once listening.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;

/// hyper's buffer limit in the gateway (`config::MAX_HEAD_BUFFER`, crate-private).
const MAX_HEAD_BUFFER: usize = 512 * 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(mode)) = (args.next(), args.next()) else {
        return Err("usage: hold_server LISTEN_ADDR hyper|hyper-boxed|tcp [--hold BYTES]".into());
    };
    let hold: usize = match (args.next().as_deref(), args.next()) {
        (Some("--hold"), Some(n)) => n.parse()?,
        _ => 4096,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!("ready");
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(3600))
            .max_buf_size(MAX_HEAD_BUFFER)
            .keep_alive(true);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            match mode.as_str() {
                "tcp" => {
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let mut buf = vec![0u8; 1024];
                        let _ = stream.read(&mut buf).await;
                        std::future::pending::<()>().await;
                        drop((stream, buf));
                    });
                }
                "hyper" | "hyper-boxed" => {
                    let boxed = mode == "hyper-boxed";
                    let served = http.serve_connection(
                        TokioIo::new(stream),
                        hyper::service::service_fn(move |req| async move {
                            // The request (its head shares hyper's read buffer) is kept, as
                            // the gateway keeps a queued one.
                            let held = boxed.then(|| vec![1u8; hold]);
                            std::future::pending::<()>().await;
                            drop((req, held));
                            Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
                        }),
                    );
                    tokio::spawn(async move {
                        let _ = served.await;
                    });
                }
                other => return Err(format!("unknown mode {other}").into()),
            }
        }
    })
}
