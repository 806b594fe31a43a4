// Throwaway experiment (not committed): the cheapest possible hyper + hyper-util proxy,
// to learn what the stack itself costs in gatebench's overhead scenario.
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args[1].clone();
    let upstream: http::Uri = args[2].parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(&listen).await.unwrap();
        let client: Client<_, hyper::body::Incoming> = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(128)
            .build_http();
        loop {
            let (s, _) = l.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            let client = client.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |mut req: http::Request<hyper::body::Incoming>| {
                        let client = client.clone();
                        let upstream = upstream.clone();
                        async move {
                            let uri = http::Uri::builder()
                                .scheme(upstream.scheme().unwrap().clone())
                                .authority(upstream.authority().unwrap().clone())
                                .path_and_query(req.uri().path_and_query().unwrap().clone())
                                .build()
                                .unwrap();
                            *req.uri_mut() = uri;
                            let resp = client.request(req).await.unwrap();
                            Ok::<_, Infallible>(resp.map(|b| b.boxed()))
                        }
                    },
                );
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}
