//! A closed-loop HTTP/1.1 load generator for `bench/load.py`: CONNECTIONS keep-alive
//! connections each send `GET PATH` back to back for SECONDS, then it prints one JSON line
//! with the request count, requests/s and latency percentiles. Any answer but 200 counts as
//! an error (the benchmark refuses to report a run with errors).
//!
//! `cargo run --release --example loadgen -- http://127.0.0.1:8787/v1/users/me 32 5`

use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(conns), Some(secs)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: loadgen URL CONNECTIONS SECONDS".into());
    };
    let url: http::Uri = url.parse()?;
    let conns: usize = conns.parse()?;
    let duration = Duration::from_secs_f64(secs.parse()?);
    let authority = url.authority().ok_or("URL without host:port")?.to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tallies = rt.block_on(async move {
        let start = Instant::now();
        let tasks: Vec<_> = (0..conns)
            .map(|_| tokio::spawn(connection(url.clone(), authority.clone(), start + duration)))
            .collect();
        let mut tallies = Vec::new();
        for t in tasks {
            tallies.push(t.await?);
        }
        Ok::<_, Box<dyn std::error::Error>>((tallies, start.elapsed()))
    })?;
    let (tallies, elapsed) = tallies;
    let mut all: Vec<u32> = Vec::new();
    let mut errors = 0;
    for t in tallies {
        all.extend(t.latencies_us);
        errors += t.errors;
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        f64::from(all[i]) / 1000.0
    };
    println!(
        r#"{{"requests":{},"errors":{},"seconds":{:.3},"rps":{:.1},"p50_ms":{:.3},"p99_ms":{:.3}}}"#,
        all.len(),
        errors,
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
    );
    Ok(())
}

/// One keep-alive connection sending requests back to back until `until`.
async fn connection(url: http::Uri, authority: String, until: Instant) -> Tally {
    let mut tally = Tally {
        latencies_us: Vec::with_capacity(1 << 16),
        errors: 0,
    };
    let path = url.path_and_query().map_or("/", |p| p.as_str()).to_string();
    'reconnect: while Instant::now() < until {
        let Ok(stream) = tokio::net::TcpStream::connect(&authority).await else {
            tally.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
        else {
            tally.errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            let req = http::Request::get(path.as_str())
                .header(http::header::HOST, authority.as_str())
                .header(http::header::AUTHORIZATION, "Bearer ntn_loadbench_token")
                .header("notion-version", "2022-06-28")
                .body(Empty::new());
            let Ok(req) = req else {
                tally.errors += 1;
                return tally;
            };
            if sender.ready().await.is_err() {
                // The server closed the connection after its last answer (nginx does so
                // every `keepalive_requests`): not an error, open another one.
                continue 'reconnect;
            }
            let sent = Instant::now();
            let res = match sender.send_request(req).await {
                Ok(res) => res,
                Err(e) => {
                    eprintln!("send: {e}");
                    tally.errors += 1;
                    continue 'reconnect;
                }
            };
            let ok = res.status() == http::StatusCode::OK;
            if !ok {
                eprintln!("answer: {}", res.status());
            }
            if res.into_body().collect().await.is_err() || !ok {
                tally.errors += 1;
                continue 'reconnect;
            }
            let us = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            tally.latencies_us.push(us);
        }
    }
    tally
}
