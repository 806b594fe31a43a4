//! `notion-gateway doctor`: the checklist a person follows when Notion calls fail, run in one
//! command (docs/behaviour.md §6).
//!
//! Each step is one line, PASS, FAIL or SKIP, with the fix to try when it fails. The steps use
//! the gateway's own configuration and upstream client ([`crate::upstream::Upstream`]), so
//! they see exactly the proxy, CA bundle and timeouts the gateway would. The token is read by
//! the caller (an environment variable), sent only to the configured upstream, and never
//! printed.
//!
//! The steps against the upstream stop where the next cannot mean anything (no TLS verdict
//! without a connection); Notion's own status page, Redis and the local gateway are asked in
//! any case, since they answer different questions ("is Notion having an incident?", "is the
//! gateway here running?").

use std::time::Duration;

use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde::Serialize;

use crate::body::RequestBody;
use crate::config::{Config, ConfigError};
use crate::error::GatewayError;
use crate::upstream::Upstream;

/// What one step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub step: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every step's result, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.outcome == Outcome::Fail)
    }

    pub fn outcome_of(&self, step: &str) -> Option<Outcome> {
        self.checks
            .iter()
            .find(|c| c.step == step)
            .map(|c| c.outcome)
    }

    /// One line per step, then a summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let tag = match c.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "SKIP",
            };
            out.push_str(&format!("{tag}  {:<15} {}\n", c.step, c.detail));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("      {:<15} fix: {fix}\n", ""));
            }
        }
        let count = |o| self.checks.iter().filter(|c| c.outcome == o).count();
        out.push_str(&format!(
            "\n{} passed, {} failed, {} skipped\n",
            count(Outcome::Pass),
            count(Outcome::Fail),
            count(Outcome::Skip)
        ));
        out
    }
}

/// What to check besides the configuration.
pub struct Options {
    /// The integration token to try against `GET /v1/users/me`; `None` skips the token steps.
    pub token: Option<String>,
    /// A running gateway to ask for `/readyz` and `/status` (e.g. `http://127.0.0.1:8787`).
    pub gateway: Option<String>,
}

/// Longest wait for any one network step.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest clock difference with the upstream's `Date` before it is reported.
const MAX_SKEW: Duration = Duration::from_secs(60);

struct Steps(Vec<Check>);

impl Steps {
    fn push(&mut self, step: &'static str, outcome: Outcome, detail: String, fix: Option<&str>) {
        self.0.push(Check {
            step,
            outcome,
            detail,
            fix: fix.map(str::to_owned),
        });
    }
    fn pass(&mut self, step: &'static str, detail: String) {
        self.push(step, Outcome::Pass, detail, None);
    }
    fn fail(&mut self, step: &'static str, detail: String, fix: &str) {
        self.push(step, Outcome::Fail, detail, Some(fix));
    }
    fn skip(&mut self, step: &'static str, detail: &str) {
        self.push(step, Outcome::Skip, detail.to_owned(), None);
    }
}

/// Notion's public status page API. The status page is hosted on Atlassian Statuspage's
/// API shape: `GET /api/v2/status.json` answers
/// `{"status": {"indicator": "none"|"minor"|"major"|"critical"|"maintenance", "description": ...}}`
/// (https://www.notion-status.com, linked from https://status.notion.so; the v2 API is
/// described at https://metastatuspage.com/api and used by status aggregators for
/// https://www.notion-status.com/api/v2/summary.json).
pub const NOTION_STATUS_URL: &str = "https://www.notion-status.com/api/v2/status.json";

/// Longest wait for Notion's status page: it is a hint, not a verdict on this machine.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs every step except Notion's status page. `config` is the result of loading the
/// configuration as `serve` would.
pub async fn run(config: Result<Config, ConfigError>, opts: Options) -> Report {
    run_with_status_page(config, opts, None).await
}

/// Runs every step, asking `status_url` (normally [`NOTION_STATUS_URL`]) whether Notion
/// reports an incident; `None` or `""` skips that step.
pub async fn run_with_status_page(
    config: Result<Config, ConfigError>,
    opts: Options,
    status_url: Option<&str>,
) -> Report {
    let mut s = Steps(Vec::new());
    let cfg = match config {
        Ok(c) => {
            s.pass("config", "configuration is valid".into());
            c
        }
        Err(e) => {
            s.fail(
                "config",
                e.to_string(),
                "correct the named key (notion-gateway check-config shows the effective values)",
            );
            return Report { checks: s.0 };
        }
    };
    upstream_steps(&mut s, &cfg, &opts).await;
    match status_url.filter(|u| !u.trim().is_empty()) {
        None => s.skip("notion-status", "not asked (--status-url \"\")"),
        Some(url) => check_notion_status(&mut s, &cfg, url.trim()).await,
    }
    check_redis(&mut s, &cfg).await;
    match &opts.gateway {
        None => s.skip("gateway", "no running gateway to ask"),
        Some(url) => check_gateway(&mut s, url).await,
    }
    Report { checks: s.0 }
}

/// Proxy, DNS, TCP, TLS, clock, token and Notion-Version, in that order, stopping at the
/// first step the others depend on.
async fn upstream_steps(s: &mut Steps, cfg: &Config, opts: &Options) {
    let base = cfg.upstream.base.to_string();
    let base = base.trim_end_matches('/');

    match &cfg.upstream.proxy {
        Some(p) => s.pass(
            "proxy",
            format!(
                "through the HTTP proxy {} (upstream.proxy or the *_PROXY environment)",
                crate::config::redact_userinfo(&p.uri.to_string())
            ),
        ),
        None => s.pass("proxy", "direct connection (no proxy configured)".into()),
    }

    let host = cfg.upstream.base.host().unwrap_or_default().to_owned();
    let port =
        cfg.upstream
            .base
            .port_u16()
            .unwrap_or(if cfg.upstream.base.scheme_str() == Some("http") {
                80
            } else {
                443
            });
    if cfg.upstream.proxy.is_some() {
        s.skip("dns", "the proxy resolves the upstream's name");
    } else {
        match tokio::time::timeout(STEP_TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
            .await
        {
            Ok(Ok(addrs)) => {
                let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                s.pass("dns", format!("{host} -> {}", addrs.join(", ")));
            }
            Ok(Err(e)) => {
                s.fail(
                    "dns",
                    format!("cannot resolve {host}: {e}"),
                    "check the machine's DNS (resolv.conf) or set upstream.proxy if the network only allows a proxy",
                );
                return;
            }
            Err(_) => {
                s.fail(
                    "dns",
                    format!("resolving {host} took longer than {STEP_TIMEOUT:?}"),
                    "check the machine's DNS servers",
                );
                return;
            }
        }
    }

    let upstream = match Upstream::new(&cfg.upstream) {
        Ok(u) => u,
        Err(e) => {
            s.fail(
                "connect",
                format!("cannot build the upstream client: {e}"),
                "check upstream.ca_bundle",
            );
            return;
        }
    };
    let tls = cfg.upstream.base.scheme_str() != Some("http");

    // One request without credentials proves TCP (and the proxy tunnel) and TLS: Notion
    // answers it 401 without doing any work.
    let anonymous = get_me(&upstream, cfg, None).await;
    let date = match &anonymous {
        Ok((status, headers, _)) => {
            s.pass("connect", format!("TCP connection to {base} established"));
            if tls {
                s.pass(
                    "tls",
                    "TLS handshake verified the upstream's certificate".into(),
                );
            } else {
                s.skip("tls", "the upstream URL is http://");
            }
            let _ = status;
            headers.get(header::DATE).cloned()
        }
        Err(GatewayError::UpstreamTls { detail, .. }) => {
            s.pass("connect", format!("TCP connection to {base} established"));
            s.fail(
                "tls",
                format!("TLS handshake failed: {detail}"),
                "a network that inspects TLS needs its CA in upstream.ca_bundle (PEM); otherwise check the system clock and the upstream URL",
            );
            return;
        }
        Err(e) => {
            s.fail(
                "connect",
                e.to_string(),
                "check that the host allows outbound HTTPS to the upstream (firewall, upstream.proxy / HTTPS_PROXY)",
            );
            if tls {
                s.skip("tls", "no connection");
            }
            return;
        }
    };

    match date
        .as_ref()
        .and_then(|d| d.to_str().ok())
        .and_then(httpdate_parse)
    {
        Some(theirs) => {
            let ours = std::time::SystemTime::now();
            let skew = ours
                .duration_since(theirs)
                .or_else(|e| Ok::<_, ()>(e.duration()))
                .unwrap_or_default();
            if skew > MAX_SKEW {
                s.fail(
                    "clock",
                    format!(
                        "this machine's clock is {} s off the upstream's",
                        skew.as_secs()
                    ),
                    "synchronise the clock (NTP): TLS and Notion's timestamps depend on it",
                );
            } else {
                s.pass(
                    "clock",
                    format!("within {} s of the upstream's Date", skew.as_secs().max(1)),
                );
            }
        }
        None => s.skip("clock", "the upstream sent no Date header"),
    }

    match &opts.token {
        None => {
            s.skip(
                "token",
                "no token given (set NOTION_TOKEN, or --token-env VAR)",
            );
            s.skip("notion-version", "needs a token");
        }
        Some(token) => match get_me(&upstream, cfg, Some(token)).await {
            Ok((status, _, body)) if status.is_success() => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let name = v["name"].as_str().unwrap_or("(unnamed)");
                let workspace = v
                    .pointer("/bot/workspace_name")
                    .and_then(|w| w.as_str())
                    .unwrap_or("(unknown workspace)");
                s.pass(
                    "token",
                    format!(
                        "valid: bot \"{name}\" in workspace \"{workspace}\" (token {})",
                        crate::identity::TokenId::of(token.as_bytes()).as_str()
                    ),
                );
                s.pass(
                    "notion-version",
                    format!(
                        "{} accepted",
                        cfg.upstream.notion_version.to_str().unwrap_or("?")
                    ),
                );
            }
            Ok((status, _, body)) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let code = v["code"].as_str().unwrap_or("");
                let message = v["message"].as_str().unwrap_or("");
                if status == StatusCode::BAD_REQUEST
                    && message.to_ascii_lowercase().contains("version")
                {
                    s.pass("token", "not rejected".into());
                    s.fail(
                        "notion-version",
                        format!("Notion refused Notion-Version: {message}"),
                        "set upstream.notion_version to a version Notion supports (see developers.notion.com/reference/versioning)",
                    );
                } else {
                    s.fail(
                        "token",
                        format!("Notion answered {status} {code}: {message}"),
                        if status == StatusCode::UNAUTHORIZED {
                            "the token is wrong or revoked: copy it again from the integration's settings (notion.so/profile/integrations)"
                        } else {
                            "see Notion's message above"
                        },
                    );
                    s.skip("notion-version", "needs an accepted token");
                }
            }
            Err(e) => {
                s.fail(
                    "token",
                    e.to_string(),
                    "the connection worked a moment ago: retry",
                );
                s.skip("notion-version", "needs an accepted token");
            }
        },
    }
}

/// With `limits.backend = "redis"`: Redis answers, and takes the budget script.
async fn check_redis(s: &mut Steps, cfg: &Config) {
    let Some(shared) = cfg.limits.shared.clone() else {
        s.skip(
            "redis",
            "limits.backend = \"local\": budgets are not shared",
        );
        return;
    };
    let url = crate::config::redact_userinfo(&shared.redis_url);
    let fix = "start Redis or correct limits.redis_url (replicas serve on their local share \
               meanwhile, at limits.redis_local_share of each budget)";
    let client = match crate::shaper::redis::RedisBudgets::new(shared) {
        Ok(c) => c,
        Err(e) => return s.fail("redis", format!("{url}: {e}"), fix),
    };
    let started = tokio::time::Instant::now();
    if let Err(e) = client.ping().await {
        return s.fail("redis", format!("{url}: {e}"), fix);
    }
    let rtt = started.elapsed();
    match client.load_script().await {
        Ok(sha) => s.pass(
            "redis",
            format!(
                "{url} answers PING in {:.1} ms and took the budget script ({})",
                rtt.as_secs_f64() * 1000.0,
                &sha[..sha.len().min(12)]
            ),
        ),
        Err(e) => s.fail(
            "redis",
            format!("{url} answers PING but refused the budget script: {e}"),
            "Redis 5 or later with scripting allowed (EVAL, SCRIPT LOAD) for this user",
        ),
    }
}

/// Notion's status page: PASS when it reports no incident, FAIL naming the incident, SKIP when
/// it cannot be asked (no internet, a proxy that blocks it): its absence says nothing about
/// this machine's path to the API. Asked through the same proxy and CA bundle as the upstream.
async fn check_notion_status(s: &mut Steps, cfg: &Config, url: &str) {
    let step = "notion-status";
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return s.skip(step, &format!("{url} is not a URL: {e}")),
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return s.skip(step, &format!("{url} is not an http(s) URL"));
    };
    let base = match format!("{scheme}://{authority}/").parse() {
        Ok(b) => b,
        Err(e) => return s.skip(step, &format!("{url}: {e}")),
    };
    let mut up_cfg = cfg.upstream.clone();
    up_cfg.base = base;
    up_cfg.connect_timeout = up_cfg.connect_timeout.min(STATUS_TIMEOUT);
    let client = match Upstream::new(&up_cfg) {
        Ok(c) => c,
        Err(e) => return s.skip(step, &format!("cannot build a client for {url}: {e}")),
    };
    let fetch = async {
        let target = client.uri_for(uri.path_and_query())?;
        let mut req = Request::new(RequestBody::Replayable(None));
        *req.uri_mut() = target;
        req.headers_mut().insert(header::HOST, client.host.clone());
        req.headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let resp = client.send(req).await?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), 256 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, GatewayError>((status, body))
    };
    let (status, body) = match tokio::time::timeout(STATUS_TIMEOUT, fetch).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return s.skip(step, &format!("{url} unreachable: {e}")),
        Err(_) => {
            return s.skip(
                step,
                &format!("{url} did not answer within {}s", STATUS_TIMEOUT.as_secs()),
            )
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let indicator = v.pointer("/status/indicator").and_then(|i| i.as_str());
    let description = v
        .pointer("/status/description")
        .and_then(|d| d.as_str())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>();
    let page = v
        .pointer("/page/url")
        .and_then(|u| u.as_str())
        .filter(|u| u.starts_with("https://") && u.len() < 200 && !u.contains(char::is_whitespace))
        .unwrap_or("https://www.notion-status.com");
    match indicator {
        _ if !status.is_success() => s.skip(step, &format!("{url} answered {status}")),
        None => s.skip(step, &format!("{url} did not answer in the status page's shape")),
        Some("none") => s.pass(step, format!("Notion reports no incident: {description}")),
        Some(level) => s.fail(
            step,
            format!("Notion reports an incident ({}): {description}", level.chars().filter(char::is_ascii_alphanumeric).take(20).collect::<String>()),
            &format!("failures may be Notion's, not yours: follow {page}; the gateway retries what is safe meanwhile"),
        ),
    }
}

async fn get_me(
    upstream: &Upstream,
    cfg: &Config,
    token: Option<&str>,
) -> Result<(StatusCode, http::HeaderMap, bytes::Bytes), GatewayError> {
    let uri = upstream.uri_for(Some(&http::uri::PathAndQuery::from_static("/v1/users/me")))?;
    let mut req = Request::new(RequestBody::Replayable(None));
    *req.method_mut() = Method::GET;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    h.insert(header::HOST, upstream.host.clone());
    h.insert("notion-version", cfg.upstream.notion_version.clone());
    if let Some(t) = token {
        let t = t.trim();
        let value = if t.starts_with("Bearer ") || t.starts_with("Basic ") {
            t.to_owned()
        } else {
            format!("Bearer {t}")
        };
        let mut v = HeaderValue::from_str(&value).map_err(|_| {
            GatewayError::UpstreamBroken(
                "the token contains characters a header cannot carry".into(),
            )
        })?;
        v.set_sensitive(true);
        h.insert(header::AUTHORIZATION, v);
    }
    let resp = tokio::time::timeout(STEP_TIMEOUT, upstream.send(req))
        .await
        .map_err(|_| GatewayError::UpstreamTimeout(STEP_TIMEOUT))??;
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(STEP_TIMEOUT, body.collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((parts.status, parts.headers, body))
}

/// A plain HTTP/1.0 GET to `authority` (`host:port`): the status code and body.
async fn raw_get(authority: &str, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(authority).await?;
    c.write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// `notion-gateway healthcheck`: whether the gateway listening on `listen` answers `/healthz`
/// within two seconds. An unspecified address (`0.0.0.0`, the container's) is asked on
/// loopback.
pub async fn healthcheck(listen: std::net::SocketAddr) -> Result<(), String> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    match tokio::time::timeout(
        Duration::from_secs(2),
        raw_get(&addr.to_string(), "/healthz"),
    )
    .await
    {
        Ok(Ok((200, _))) => Ok(()),
        Ok(Ok((status, body))) => Err(format!("{addr} answered /healthz with {status}: {body}")),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr} did not answer /healthz within 2 s")),
    }
}

/// Asks a running gateway for `/readyz` and `/status`.
async fn check_gateway(s: &mut Steps, url: &str) {
    let authority = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    match tokio::time::timeout(STEP_TIMEOUT, raw_get(&authority, "/readyz")).await {
        Ok(Ok((status, body))) => {
            if status == 200 {
                s.pass("gateway", format!("{url} is ready: {body}"));
            } else {
                s.fail(
                    "gateway",
                    format!("{url} is not ready: {body}"),
                    "the gateway cannot reach Notion: run this doctor on the gateway's host",
                );
            }
            if let Ok(Ok((200, body))) =
                tokio::time::timeout(STEP_TIMEOUT, raw_get(&authority, "/status")).await
            {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let tokens = v["tokens"].as_array().map_or(0, Vec::len);
                let paused = v["tokens"].as_array().map_or(0, |t| {
                    t.iter().filter(|k| !k["paused_for_s"].is_null()).count()
                });
                s.pass(
                    "gateway-status",
                    format!("{tokens} token(s) known, {paused} paused by Notion now"),
                );
            }
        }
        _ => s.skip("gateway", "no gateway answers there"),
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form HTTP/1.1 servers send.
fn httpdate_parse(s: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u64
        + 1;
    let (day, year): (u64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = (y - era * 400) as u64;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe as i64 - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + sec;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        let t = httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
        assert!(httpdate_parse("yesterday").is_none());
    }
}
