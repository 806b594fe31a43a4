//! `GET /metrics` after scripted traffic (docs/behaviour.md §5). In its own binary: the Prometheus
//! recorder is process-wide, so this is the only gateway in the process.

mod support;

use http::Method;
use support::*;

const PAGE: &str = "/v1/pages/59833787-2cf9-4fdf-8782-e53db20768a5";
const TOKEN: &str = "ntn_METRICSSECRET_token";

fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(series))
}

fn value(text: &str, series: &str) -> f64 {
    let l = line(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"));
    l.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn metrics_show_traffic_retries_pushbacks_and_rejections_with_bounded_labels() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.server.max_body = 1024;
    let gw = TestGateway::start(cfg).await;
    let get = |path: &str| {
        gw.request_as(Method::GET, path, TOKEN)
            .body(empty())
            .unwrap()
    };

    // A read through a 502 (retried), one through Notion's 429 (paused, sent again).
    notion.push(Reply::html_502());
    assert_eq!(gw.send(get(PAGE)).await.status, 200);
    notion.push(Reply::rate_limited_because(
        1,
        "public_api_request_rate_limit",
    ));
    assert_eq!(gw.send(get(PAGE)).await.status, 200);
    // Answered by the gateway itself.
    let no_auth = gw
        .send(
            http::Request::builder()
                .uri(gw.url(PAGE))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(no_auth.status, 401);
    assert_eq!(gw.send(get("/nowhere")).await.status, 404);
    let big = gw
        .request_as(Method::POST, "/v1/pages", TOKEN)
        .header("content-length", "4096")
        .body(full(vec![b'x'; 4096]))
        .unwrap();
    assert_eq!(gw.send(big).await.status, 413);

    let m = gw
        .send(gw.request(Method::GET, "/metrics").body(empty()).unwrap())
        .await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8(m.body.to_vec()).unwrap();

    let page = r#"route="/v1/pages/{id}""#;
    assert_eq!(
        value(
            &text,
            &format!(r#"notion_gateway_requests_total{{{page},method="GET",status="200"}}"#)
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"notion_gateway_retries_total{{{page},reason="502"}}"#)
        ),
        1.0
    );
    for (outcome, n) in [("5xx", 1.0), ("429", 1.0), ("2xx", 2.0)] {
        assert_eq!(
            value(
                &text,
                &format!(r#"notion_gateway_upstream_attempts_total{{{page},outcome="{outcome}"}}"#)
            ),
            n,
            "{outcome}"
        );
    }
    // A token without a configured name is `other` in every label (its hash is in the request
    // log, not in the metrics): labels stay bounded whatever tokens arrive.
    let hash = notion_gateway::identity::TokenId::of(TOKEN.as_bytes());
    assert_eq!(
        value(
            &text,
            r#"notion_gateway_notion_pushbacks_total{integration="other",status="429",reason="public_api_request_rate_limit"}"#
        ),
        1.0
    );
    assert!(!text.contains(hash.as_str()), "{text}");
    for reason in ["no_authorization", "not_found", "body_too_large"] {
        assert_eq!(
            value(
                &text,
                &format!(r#"notion_gateway_rejections_total{{reason="{reason}"}}"#)
            ),
            1.0,
            "{reason}"
        );
    }
    assert!(line(&text, r#"notion_gateway_queue_depth{integration="other"}"#).is_some());
    assert!(line(
        &text,
        r#"notion_gateway_queue_wait_seconds_bucket{integration="other""#
    )
    .is_some());
    assert!(line(
        &text,
        &format!(r#"notion_gateway_request_duration_seconds_bucket{{{page},le="0.005"}}"#)
    )
    .is_some());
    assert!(line(
        &text,
        r#"notion_gateway_upstream_attempt_duration_seconds_bucket{route="/v1/pages/{id}",le="65"}"#
    )
    .is_some());
    assert_eq!(value(&text, "notion_gateway_in_flight_requests"), 0.0);
    assert!(line(&text, "notion_gateway_build_info{version=").is_some());
    assert!(text.contains("# HELP notion_gateway_requests_total"));
    // Neither the token nor any object id becomes a label.
    assert!(!text.contains("METRICSSECRET"), "{text}");
    assert!(!text.contains("59833787"), "{text}");
}
