//! `notion-gateway report [LOG_FILE]...`: the error analysis people run over a request log
//! when Notion calls fail with 502s — errors by status and by hour, errors against request
//! size (large requests called out), the peak error hour, the slowest routes, retries, and the
//! Notion request ids of failures (what Notion's support asks for).
//!
//! Input is the gateway's own JSON request log (`log.file`, one event per line; fields in
//! [`crate::telemetry`]). The file is streamed: memory is bounded by the number of distinct
//! routes, hours and statuses (each capped), never by the file's size. A line that is not a
//! request event, is cut off (a log being written, or the first line of a file rotated with
//! `copytruncate`), is not JSON, or is longer than [`MAX_LINE`] is counted and skipped. Fields
//! may be missing, of another type than expected, or unknown (the event grows): each is read
//! on its own and a field that cannot be read is treated as absent.
//!
//! What it does not do: decompress rotated `.gz` files (`zcat f.gz | notion-gateway report -`),
//! or follow a file as it grows.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Longest line read; longer ones are skipped (a request event is about 400 bytes).
pub const MAX_LINE: usize = 1024 * 1024;
/// Bounds on the distinct keys kept, whatever the file holds.
const MAX_ROUTES: usize = 1000;
const MAX_HOURS: usize = 24 * 400;
const MAX_REASONS: usize = 100;

/// Size buckets of the request body (`request_bytes`), upper bounds in bytes. 500 KB is a
/// bound because Notion refuses JSON payloads over it ("payloads have a maximum size of 1000
/// block elements and 500KB overall", https://developers.notion.com/reference/request-limits);
/// larger bodies are file-upload parts (up to 20 MB).
const SIZE_BUCKETS: [(&str, u64); 8] = [
    ("no body", 0),
    ("up to 1 KiB", 1024),
    ("1-10 KiB", 10 * 1024),
    ("10-100 KiB", 100 * 1024),
    ("100-500 KB", 500_000),
    ("500 KB-1 MiB", 1024 * 1024),
    ("1-10 MiB", 10 * 1024 * 1024),
    ("over 10 MiB", u64::MAX),
];
/// Requests larger than this are listed on their own.
pub const LARGE_REQUEST: u64 = 1024 * 1024;

/// Duration histogram: bucket `i` holds durations up to `DURATION_BASE_MS * RATIO^i`.
const DURATION_BASE_MS: f64 = 0.01;
const RATIO: f64 = 1.1;
const DURATION_BUCKETS: usize = 180; // 0.01 ms * 1.1^180 ≈ 28 min

/// The running analysis; feed it with [`Analysis::read`], then [`Analysis::finish`].
pub struct Analysis {
    top: usize,
    files: Vec<String>,
    bytes: u64,
    lines: u64,
    other_events: u64,
    unreadable: u64,
    cut_off: u64,
    too_long: u64,
    requests: u64,
    errors: u64,
    server_errors: u64,
    first: Option<String>,
    last: Option<String>,
    by_status: BTreeMap<u16, u64>,
    hours: BTreeMap<String, Count>,
    hours_dropped: u64,
    sizes: [Count; SIZE_BUCKETS.len()],
    large: VecDeque<Failure>,
    routes: HashMap<String, RouteStats>,
    retried: u64,
    retried_failed: u64,
    extra_attempts: u64,
    reasons: BTreeMap<String, u64>,
    refusals: BTreeMap<String, u64>,
    failures: VecDeque<Failure>,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Count {
    pub requests: u64,
    pub errors: u64,
    pub server_errors: u64,
}

impl Count {
    fn add(&mut self, status: u16) {
        self.requests += 1;
        self.errors += u64::from(status >= 400);
        self.server_errors += u64::from(status >= 500);
    }
}

struct RouteStats {
    count: u64,
    errors: u64,
    total_ms: f64,
    max_ms: f64,
    histogram: Box<[u32; DURATION_BUCKETS]>,
}

impl RouteStats {
    fn new() -> Self {
        Self {
            count: 0,
            errors: 0,
            total_ms: 0.0,
            max_ms: 0.0,
            histogram: Box::new([0; DURATION_BUCKETS]),
        }
    }

    fn add(&mut self, ms: f64, error: bool) {
        self.count += 1;
        self.errors += u64::from(error);
        self.total_ms += ms;
        self.max_ms = self.max_ms.max(ms);
        let i = if ms <= DURATION_BASE_MS {
            0
        } else {
            ((ms / DURATION_BASE_MS).ln() / RATIO.ln()).ceil() as usize
        };
        let b = &mut self.histogram[i.min(DURATION_BUCKETS - 1)];
        *b = b.saturating_add(1);
    }

    /// The upper bound of the bucket holding quantile `q` (within 10 % of the true value).
    fn quantile(&self, q: f64) -> f64 {
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, n) in self.histogram.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                return (DURATION_BASE_MS * RATIO.powi(i as i32)).min(self.max_ms);
            }
        }
        self.max_ms
    }
}

/// One failed request, as listed in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub time: String,
    pub status: u16,
    pub method: String,
    pub route: String,
    pub request_bytes: u64,
    pub attempts: u64,
    pub request_id: String,
    pub notion_request_id: String,
}

/// What `report` prints (`--json` serializes this).
#[derive(Debug, Serialize)]
pub struct Report {
    pub files: Vec<String>,
    pub bytes_read: u64,
    pub lines: Lines,
    pub first_event: Option<String>,
    pub last_event: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub server_errors: u64,
    /// Status code -> requests answered with it (errors and successes).
    pub by_status: BTreeMap<u16, u64>,
    /// `YYYY-MM-DDTHH` (UTC) -> requests and errors in that hour.
    pub by_hour: BTreeMap<String, Count>,
    pub peak_error_hour: Option<PeakHour>,
    pub by_request_size: Vec<SizeRow>,
    pub large_requests: LargeRequests,
    pub slowest_routes: Vec<RouteRow>,
    pub retries: Retries,
    /// What the gateway refused or failed by itself (`error` field) -> count.
    pub gateway_reasons: BTreeMap<String, u64>,
    /// The most recent failed requests (newest last), with Notion's request id when Notion
    /// answered.
    pub recent_failures: Vec<Failure>,
}

#[derive(Debug, Serialize)]
pub struct Lines {
    pub read: u64,
    pub request_events: u64,
    /// Valid JSON that is not a request event (other log lines).
    pub other_events: u64,
    /// Not JSON, or a line cut off at the start or end of a file.
    pub unreadable: u64,
    /// Of `unreadable`: the last line of a file without its newline (still being written).
    pub cut_off_at_end: u64,
    pub too_long: u64,
    /// Hours beyond the bound on distinct hours, counted in totals only.
    pub hours_not_listed: u64,
}

#[derive(Debug, Serialize)]
pub struct PeakHour {
    pub hour: String,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Serialize)]
pub struct SizeRow {
    pub size: &'static str,
    pub requests: u64,
    pub errors: u64,
    pub server_errors: u64,
}

#[derive(Debug, Serialize)]
pub struct LargeRequests {
    /// Requests with a body over 1 MiB.
    pub requests: u64,
    pub errors: u64,
    /// The most recent failed ones.
    pub failures: Vec<Failure>,
}

#[derive(Debug, Serialize)]
pub struct RouteRow {
    pub route: String,
    pub requests: u64,
    pub errors: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Retries {
    /// Requests that took more than one upstream attempt.
    pub retried_requests: u64,
    /// Of those, how many still ended in an error.
    pub still_failed: u64,
    pub extra_attempts: u64,
    /// How failed attempts ended (`502`, `reset`, `timeout`, ...) -> count.
    pub failed_attempts: BTreeMap<String, u64>,
}

impl Analysis {
    /// `top`: how many slow routes and failures to list.
    pub fn new(top: usize) -> Self {
        Self {
            top: top.max(1),
            files: Vec::new(),
            bytes: 0,
            lines: 0,
            other_events: 0,
            unreadable: 0,
            cut_off: 0,
            too_long: 0,
            requests: 0,
            errors: 0,
            server_errors: 0,
            first: None,
            last: None,
            by_status: BTreeMap::new(),
            hours: BTreeMap::new(),
            hours_dropped: 0,
            sizes: [Count::default(); SIZE_BUCKETS.len()],
            large: VecDeque::new(),
            routes: HashMap::new(),
            retried: 0,
            retried_failed: 0,
            extra_attempts: 0,
            reasons: BTreeMap::new(),
            refusals: BTreeMap::new(),
            failures: VecDeque::new(),
        }
    }

    /// Reads one log file (or stream) to its end, line by line.
    pub fn read(&mut self, input: impl Read, name: &str) -> std::io::Result<()> {
        self.files.push(name.to_owned());
        let mut r = BufReader::with_capacity(256 * 1024, input);
        let mut line = Vec::with_capacity(4096);
        loop {
            line.clear();
            let (complete, overflow) = read_line(&mut r, &mut line)?;
            if line.is_empty() && !complete && !overflow {
                return Ok(());
            }
            self.lines += 1;
            self.bytes += line.len() as u64 + u64::from(complete);
            if overflow {
                self.too_long += 1;
                continue;
            }
            self.line(&line, complete);
        }
    }

    fn line(&mut self, raw: &[u8], complete: bool) {
        // copytruncate can leave NULs where the writer's offset ran ahead of the truncation.
        let text = trim(raw);
        if text.is_empty() {
            return;
        }
        let event: Event<'_> = match serde_json::from_slice(text) {
            Ok(e) => e,
            Err(_) => {
                self.unreadable += 1;
                self.cut_off += u64::from(!complete);
                return;
            }
        };
        let event = event.merged();
        let is_access = match event.target.as_deref() {
            Some(t) => t == crate::telemetry::ACCESS_TARGET,
            None => matches!(
                event.message.as_deref(),
                Some("request") | Some("request refused")
            ),
        };
        let Some(status) = event
            .status
            .0
            .filter(|s| (100.0..1000.0).contains(s))
            .map(|s| s as u16)
        else {
            self.other_events += 1;
            return;
        };
        if !is_access {
            self.other_events += 1;
            return;
        }
        self.request(&event, status);
    }

    fn request(&mut self, e: &Event<'_>, status: u16) {
        self.requests += 1;
        let error = status >= 400;
        self.errors += u64::from(error);
        self.server_errors += u64::from(status >= 500);
        *self.by_status.entry(status).or_default() += 1;

        let time = e.timestamp.as_deref().unwrap_or("");
        if !time.is_empty() {
            if self.first.is_none() {
                self.first = Some(bounded(time, 40));
            }
            self.last = Some(bounded(time, 40));
        }
        match hour_of(time) {
            Some(h) if self.hours.len() < MAX_HOURS || self.hours.contains_key(h) => {
                self.hours.entry(h.to_owned()).or_default().add(status);
            }
            Some(_) => self.hours_dropped += 1,
            None => self.hours.entry("unknown".into()).or_default().add(status),
        }

        let bytes = e.request_bytes.0.filter(|b| *b >= 0.0).unwrap_or(0.0) as u64;
        let bucket = SIZE_BUCKETS
            .iter()
            .position(|(_, max)| bytes <= *max)
            .unwrap_or(SIZE_BUCKETS.len() - 1);
        self.sizes[bucket].add(status);

        let route = e.route.as_deref().filter(|r| !r.is_empty()).unwrap_or(
            if e.error.as_deref().is_some_and(|x| !x.is_empty()) {
                "(refused by the gateway)"
            } else {
                "unknown"
            },
        );
        let route = if self.routes.len() < MAX_ROUTES || self.routes.contains_key(route) {
            route
        } else {
            "(other routes)"
        };
        let ms = e.duration_ms.0.filter(|d| d.is_finite() && *d >= 0.0);
        let stats = match self.routes.get_mut(route) {
            Some(s) => s,
            None => self
                .routes
                .entry(bounded(route, 200))
                .or_insert_with(RouteStats::new),
        };
        stats.add(ms.unwrap_or(0.0), error);

        let attempts = e.attempts.0.filter(|a| *a >= 0.0).unwrap_or(0.0) as u64;
        if attempts > 1 {
            self.retried += 1;
            self.retried_failed += u64::from(error);
            self.extra_attempts += attempts - 1;
        }
        for reason in &e.failed_attempts.0 {
            count_bounded(&mut self.reasons, reason);
        }
        if let Some(reason) = e.error.as_deref().filter(|r| !r.is_empty()) {
            count_bounded(&mut self.refusals, reason);
        }

        if error {
            let f = Failure {
                time: bounded(time, 40),
                status,
                method: bounded(e.method.as_deref().unwrap_or(""), 10),
                route: bounded(route, 200),
                request_bytes: bytes,
                attempts,
                request_id: bounded(e.request_id.as_deref().unwrap_or(""), 80),
                notion_request_id: bounded(e.notion_request_id.as_deref().unwrap_or(""), 80),
            };
            if bytes > LARGE_REQUEST {
                push_bounded(&mut self.large, f.clone(), self.top);
            }
            push_bounded(&mut self.failures, f, self.top);
        }
    }

    pub fn finish(self) -> Report {
        let peak_error_hour = self
            .hours
            .iter()
            .filter(|(h, c)| *h != "unknown" && c.errors > 0)
            // The earliest of equally bad hours.
            .max_by(|a, b| a.1.errors.cmp(&b.1.errors).then(b.0.cmp(a.0)))
            .map(|(h, c)| PeakHour {
                hour: h.clone(),
                requests: c.requests,
                errors: c.errors,
            });
        let mut routes: Vec<RouteRow> = self
            .routes
            .iter()
            .map(|(r, s)| RouteRow {
                route: r.clone(),
                requests: s.count,
                errors: s.errors,
                mean_ms: round(s.total_ms / s.count.max(1) as f64),
                p50_ms: round(s.quantile(0.5)),
                p95_ms: round(s.quantile(0.95)),
                max_ms: round(s.max_ms),
            })
            .collect();
        routes.sort_by(|a, b| {
            b.p95_ms
                .total_cmp(&a.p95_ms)
                .then(b.max_ms.total_cmp(&a.max_ms))
                .then(a.route.cmp(&b.route))
        });
        routes.truncate(self.top);
        let large =
            self.sizes[SIZE_BUCKETS.len() - 2..]
                .iter()
                .fold(Count::default(), |mut acc, c| {
                    acc.requests += c.requests;
                    acc.errors += c.errors;
                    acc
                });
        Report {
            files: self.files,
            bytes_read: self.bytes,
            lines: Lines {
                read: self.lines,
                request_events: self.requests,
                other_events: self.other_events,
                unreadable: self.unreadable,
                cut_off_at_end: self.cut_off,
                too_long: self.too_long,
                hours_not_listed: self.hours_dropped,
            },
            first_event: self.first,
            last_event: self.last,
            requests: self.requests,
            errors: self.errors,
            server_errors: self.server_errors,
            by_status: self.by_status,
            by_hour: self.hours,
            peak_error_hour,
            by_request_size: SIZE_BUCKETS
                .iter()
                .zip(self.sizes.iter())
                .map(|((name, _), c)| SizeRow {
                    size: name,
                    requests: c.requests,
                    errors: c.errors,
                    server_errors: c.server_errors,
                })
                .collect(),
            large_requests: LargeRequests {
                requests: large.requests,
                errors: large.errors,
                failures: self.large.into_iter().collect(),
            },
            slowest_routes: routes,
            retries: Retries {
                retried_requests: self.retried,
                still_failed: self.retried_failed,
                extra_attempts: self.extra_attempts,
                failed_attempts: self.reasons,
            },
            gateway_reasons: self.refusals,
            recent_failures: self.failures.into_iter().collect(),
        }
    }
}

impl Report {
    /// The report as text, for a terminal.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let pct = |part: u64, whole: u64| {
            if whole == 0 {
                0.0
            } else {
                part as f64 * 100.0 / whole as f64
            }
        };
        let _ = writeln!(
            o,
            "notion-gateway report: {} ({:.1} MB)",
            self.files.join(", "),
            self.bytes_read as f64 / 1e6
        );
        let _ = writeln!(
            o,
            "lines: {} read, {} request events, {} other events, {} unreadable ({} cut off at the end of a file), {} too long",
            self.lines.read,
            self.lines.request_events,
            self.lines.other_events,
            self.lines.unreadable,
            self.lines.cut_off_at_end,
            self.lines.too_long
        );
        if let (Some(a), Some(b)) = (&self.first_event, &self.last_event) {
            let _ = writeln!(o, "from {a} to {b}");
        }
        let _ = writeln!(
            o,
            "\nrequests: {}; errors (4xx and 5xx): {} ({:.2} %); server errors (5xx): {} ({:.2} %)",
            self.requests,
            self.errors,
            pct(self.errors, self.requests),
            self.server_errors,
            pct(self.server_errors, self.requests)
        );

        let _ = writeln!(o, "\nerrors by status:");
        let errors: Vec<_> = self.by_status.iter().filter(|(s, _)| **s >= 400).collect();
        if errors.is_empty() {
            let _ = writeln!(o, "  none");
        }
        for (status, n) in errors {
            let _ = writeln!(o, "  {status}  {n:>10}");
        }

        let _ = writeln!(o, "\nerrors by hour (UTC):");
        let max = self.by_hour.values().map(|c| c.errors).max().unwrap_or(0);
        for (hour, c) in &self.by_hour {
            let bar = if max == 0 {
                0
            } else {
                (c.errors * 40).div_ceil(max) as usize
            };
            let _ = writeln!(
                o,
                "  {hour:<13}  {:>9} requests  {:>8} errors  {:>6.2} %  {}",
                c.requests,
                c.errors,
                pct(c.errors, c.requests),
                "#".repeat(bar)
            );
        }
        if self.lines.hours_not_listed > 0 {
            let _ = writeln!(
                o,
                "  ({} requests in hours beyond the first {MAX_HOURS} are not listed)",
                self.lines.hours_not_listed
            );
        }
        match &self.peak_error_hour {
            Some(p) => {
                let _ = writeln!(
                    o,
                    "peak error hour: {} ({} errors of {} requests, {:.2} %)",
                    p.hour,
                    p.errors,
                    p.requests,
                    pct(p.errors, p.requests)
                );
            }
            None => {
                let _ = writeln!(o, "peak error hour: none (no errors)");
            }
        }

        let _ = writeln!(o, "\nerrors against request size:");
        for row in &self.by_request_size {
            let _ = writeln!(
                o,
                "  {:<14} {:>9} requests  {:>8} errors  {:>6.2} %  ({} 5xx)",
                row.size,
                row.requests,
                row.errors,
                pct(row.errors, row.requests),
                row.server_errors
            );
        }
        let l = &self.large_requests;
        let _ = writeln!(
            o,
            "large requests (over 1 MiB): {}, of which {} failed ({:.2} %){}",
            l.requests,
            l.errors,
            pct(l.errors, l.requests),
            if l.errors > 0 && pct(l.errors, l.requests) > pct(self.errors, self.requests) {
                " -- they fail more often than the rest: Notion refuses JSON bodies over 500 KB \
                 (developers.notion.com/reference/request-limits); upload files in parts"
            } else {
                ""
            }
        );
        failure_lines(&mut o, &l.failures);

        let _ = writeln!(
            o,
            "\nslowest routes (by p95; durations up to the response head):"
        );
        let _ = writeln!(
            o,
            "  {:<44} {:>9} {:>7} {:>9} {:>9} {:>9}",
            "route", "requests", "errors", "p50 ms", "p95 ms", "max ms"
        );
        for r in &self.slowest_routes {
            let _ = writeln!(
                o,
                "  {:<44} {:>9} {:>7} {:>9.1} {:>9.1} {:>9.1}",
                r.route, r.requests, r.errors, r.p50_ms, r.p95_ms, r.max_ms
            );
        }

        let r = &self.retries;
        let _ = writeln!(
            o,
            "\nretries: {} requests took more than one upstream attempt ({} extra attempts); {} of them still failed",
            r.retried_requests, r.extra_attempts, r.still_failed
        );
        if !r.failed_attempts.is_empty() {
            let list: Vec<String> = r
                .failed_attempts
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect();
            let _ = writeln!(o, "failed attempts ended in: {}", list.join(", "));
        }
        if !self.gateway_reasons.is_empty() {
            let list: Vec<String> = self
                .gateway_reasons
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect();
            let _ = writeln!(o, "answered by the gateway itself: {}", list.join(", "));
        }

        let _ = writeln!(
            o,
            "\nrecent failures (newest last; quote Notion's request id to Notion's support):"
        );
        failure_lines(&mut o, &self.recent_failures);
        o
    }
}

fn failure_lines(o: &mut String, failures: &[Failure]) {
    if failures.is_empty() {
        let _ = writeln!(o, "  none");
        return;
    }
    for f in failures {
        let _ = writeln!(
            o,
            "  {} {} {} {} {} B, {} attempt(s), request id {}, Notion request id {}",
            if f.time.is_empty() { "-" } else { &f.time },
            f.status,
            f.method,
            f.route,
            f.request_bytes,
            f.attempts,
            if f.request_id.is_empty() {
                "-"
            } else {
                &f.request_id
            },
            if f.notion_request_id.is_empty() {
                "- (Notion did not answer)"
            } else {
                &f.notion_request_id
            }
        );
    }
}

/// Reads up to and including the next `\n` into `line` (without it). Returns whether a newline
/// ended the line, and whether the line was longer than [`MAX_LINE`] (then it was skipped to
/// its end and `line` is empty).
fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<(bool, bool)> {
    let mut overflow = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((false, overflow));
        }
        let (chunk, found) = match memchr(buf) {
            Some(i) => (&buf[..i], Some(i)),
            None => (buf, None),
        };
        if !overflow {
            if line.len() + chunk.len() > MAX_LINE {
                overflow = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.map_or(buf.len(), |i| i + 1);
        r.consume(used);
        if found.is_some() {
            return Ok((true, overflow));
        }
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    b.iter().position(|c| *c == b'\n')
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !(c.is_ascii_whitespace() || *c == 0))
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !(c.is_ascii_whitespace() || *c == 0))
        .map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

/// `2026-11-25T10` from an RFC 3339 timestamp, or `None`.
fn hour_of(t: &str) -> Option<&str> {
    let h = t.get(..13)?;
    let b = h.as_bytes();
    let shape = b.iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'-',
        10 => *c == b'T' || *c == b' ',
        _ => c.is_ascii_digit(),
    });
    shape.then_some(h)
}

/// At most `max` characters of `s`, without control characters.
fn bounded(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn count_bounded(map: &mut BTreeMap<String, u64>, key: &str) {
    let key = key.trim();
    if key.is_empty() {
        return;
    }
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < MAX_REASONS {
        map.insert(bounded(key, 40), 1);
    } else {
        *map.entry("(other)".into()).or_default() += 1;
    }
}

fn push_bounded(q: &mut VecDeque<Failure>, f: Failure, max: usize) {
    if q.len() == max {
        q.pop_front();
    }
    q.push_back(f);
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The fields of a request event the report reads; everything else is skipped. Every field is
/// read leniently (see [`Text`], [`Number`], [`List`]), so one odd field never loses the line.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Event<'a> {
    #[serde(borrow)]
    timestamp: Text<'a>,
    #[serde(borrow)]
    target: Text<'a>,
    #[serde(borrow)]
    message: Text<'a>,
    #[serde(borrow)]
    method: Text<'a>,
    #[serde(borrow)]
    route: Text<'a>,
    status: Number,
    duration_ms: Number,
    #[serde(borrow)]
    request_id: Text<'a>,
    #[serde(borrow)]
    notion_request_id: Text<'a>,
    request_bytes: Number,
    attempts: Number,
    #[serde(borrow)]
    failed_attempts: List<'a>,
    #[serde(borrow)]
    error: Text<'a>,
    /// tracing's JSON format without `flatten_event` nests the fields here.
    #[serde(borrow)]
    fields: Option<Box<Event<'a>>>,
}

impl<'a> Event<'a> {
    /// The event with nested `fields` (if any) filled in where the top level has none.
    fn merged(mut self) -> Self {
        if let Some(f) = self.fields.take() {
            let f = *f;
            macro_rules! fill {
                ($($name:ident),*) => {$(
                    if self.$name.is_none() { self.$name = f.$name; }
                )*};
            }
            fill!(message, method, route, request_id, notion_request_id, error);
            macro_rules! fill_num {
                ($($name:ident),*) => {$(
                    if self.$name.0.is_none() { self.$name = f.$name; }
                )*};
            }
            fill_num!(status, duration_ms, request_bytes, attempts);
            if self.failed_attempts.0.is_empty() {
                self.failed_attempts = f.failed_attempts;
            }
        }
        self
    }
}

/// A string field; any other JSON type reads as absent.
#[derive(Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl Text<'_> {
    fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
    fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

/// A number field, also accepted as a numeric string; anything else reads as absent.
#[derive(Default)]
struct Number(Option<f64>);

/// `"502,reset"` or `["502", "reset"]`.
#[derive(Default)]
struct List<'a>(Vec<Cow<'a, str>>);

/// Skips whatever value comes, so the visitors below can turn it into "absent".
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

macro_rules! absent_for_other_types {
    ($out:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            skip_map(map)?;
            Ok($out)
        }
    };
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq)?;
                Ok(Text(None))
            }
            absent_for_other_types!(Text(None));
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Number;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Number(Some(v as f64)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Number(Some(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Number(Some(v).filter(|x| x.is_finite())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Number(
                    v.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
                ))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq)?;
                Ok(Number(None))
            }
            absent_for_other_types!(Number(None));
        }
        d.deserialize_any(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for List<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = List<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a comma-separated string or a list of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(List(
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(Cow::Borrowed)
                        .collect(),
                ))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(List(
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| Cow::Owned(s.to_owned()))
                        .collect(),
                ))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(List(vec![Cow::Owned(v.to_string())]))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(List(Vec::new()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(List(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = seq.next_element::<Text<'de>>()? {
                    if let Some(s) = t.0 {
                        if out.len() < 32 {
                            out.push(s);
                        }
                    }
                }
                Ok(List(out))
            }
            absent_for_other_types!(List(Vec::new()));
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyse(text: &str) -> Report {
        let mut a = Analysis::new(5);
        a.read(text.as_bytes(), "test").unwrap();
        a.finish()
    }

    const OK: &str = r#"{"timestamp":"2026-11-25T10:00:01.5Z","level":"INFO","message":"request","method":"GET","route":"/v1/users/me","status":200,"duration_ms":12.5,"request_bytes":0,"attempts":1,"failed_attempts":"","target":"notion_gateway::access"}"#;

    #[test]
    fn counts_errors_by_status_hour_and_size() {
        let text = format!(
            "{OK}\n{}\n{}\n",
            r#"{"timestamp":"2026-11-25T11:00:00Z","message":"request","route":"/v1/pages","status":502,"duration_ms":300,"request_bytes":2000000,"attempts":1,"notion_request_id":"abc","target":"notion_gateway::access"}"#,
            r#"{"timestamp":"2026-11-25T11:30:00Z","message":"request","route":"/v1/pages/{id}","status":200,"duration_ms":40,"request_bytes":"512","attempts":3,"failed_attempts":"502,reset","target":"notion_gateway::access"}"#,
        );
        let r = analyse(&text);
        assert_eq!((r.requests, r.errors, r.server_errors), (3, 1, 1));
        assert_eq!(r.by_status[&502], 1);
        assert_eq!(r.by_hour["2026-11-25T11"].requests, 2);
        assert_eq!(r.peak_error_hour.as_ref().unwrap().hour, "2026-11-25T11");
        assert_eq!(r.large_requests.requests, 1);
        assert_eq!(r.large_requests.failures[0].notion_request_id, "abc");
        assert_eq!(
            r.by_request_size[1].requests, 1,
            "512 bytes, given as a string"
        );
        assert_eq!(r.retries.retried_requests, 1);
        assert_eq!(r.retries.failed_attempts["reset"], 1);
        assert_eq!(r.slowest_routes[0].route, "/v1/pages");
        let text = r.to_text();
        assert!(text.contains("peak error hour: 2026-11-25T11"), "{text}");
    }

    #[test]
    fn odd_lines_are_counted_not_fatal() {
        let text = format!(
            "{}\n\0\0\0{OK}\nnot json\n{}\n{}\n{}",
            &OK[20..], // the first line of a file rotated mid-line
            r#"{"timestamp":"2026-11-25T10:00:00Z","message":"listening","target":"notion_gateway::server"}"#,
            r#"{"status":[1],"route":{"x":1},"attempts":true,"failed_attempts":["502",7],"new_field":{"a":[1,2]},"message":"request","target":"notion_gateway::access"}"#,
            &OK[..OK.len() - 10], // still being written
        );
        let r = analyse(&text);
        assert_eq!(r.lines.read, 6);
        assert_eq!(r.requests, 1, "the NUL-prefixed line counts");
        assert_eq!(r.lines.unreadable, 3);
        assert_eq!(r.lines.cut_off_at_end, 1);
        assert_eq!(r.lines.other_events, 2, "no status: not a request event");
    }

    #[test]
    fn long_lines_are_skipped_with_bounded_memory() {
        let long = "x".repeat(MAX_LINE + 10);
        let r = analyse(&format!("{long}\n{OK}\n"));
        assert_eq!(r.lines.too_long, 1);
        assert_eq!(r.requests, 1);
    }

    #[test]
    fn quantiles_are_within_ten_percent() {
        let mut s = RouteStats::new();
        for i in 1..=1000 {
            s.add(i as f64, false);
        }
        let p50 = s.quantile(0.5);
        let p95 = s.quantile(0.95);
        assert!((450.0..=560.0).contains(&p50), "{p50}");
        assert!((900.0..=1000.0).contains(&p95), "{p95}");
    }

    #[test]
    fn nested_fields_are_read_too() {
        let r = analyse(
            r#"{"timestamp":"2026-11-25T10:00:00Z","target":"notion_gateway::access","fields":{"message":"request","status":503,"route":"/v1/search"}}"#,
        );
        assert_eq!(r.server_errors, 1);
    }
}
