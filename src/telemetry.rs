//! Logging: the subscriber set up at start, and the one event each request produces.
//!
//! Output is human-readable (`log.format = "pretty"`) or one JSON object per line (`"json"`).
//! The per-request event has target `notion_gateway::access` and these fields: `method`,
//! `path`, `status`, `duration_ms` (until the response head was ready; a streamed body may
//! take longer), `request_id`, `notion_request_id`, `integration` (the
//! configured integration name, or the token's SHA-256 prefix), `key` (the name of the
//! gateway key the caller presented, empty without one), `request_bytes` (declared
//! length), `queue_wait_ms`, `attempts` (upstream attempts; more than one after Notion's
//! 429/529), `upstream_status`, and `error` (the gateway's own reason when it answered by
//! itself). Tokens never appear.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::Response;
use http::{header, HeaderValue, Request};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{FormatFields, Writer};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::error::GatewayError;
use crate::headers::NOTION_REQUEST_ID;

/// Flushes buffered log lines when dropped (at the end of `main`).
pub struct LogGuard(Vec<BatchWriter>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        for w in &self.0 {
            w.flush();
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
///
/// Lines go to stdout through a [`BatchWriter`]. With one `write` syscall per access-log line,
/// the gateway proxied 22.9k req/s in gatebench's overhead scenario, against 37.1k with the log
/// off; handing each line to a writer thread (tracing-appender) was not much better, because
/// the thread was woken for nearly every line.
pub fn init(cfg: &LogConfig) -> LogGuard {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;

    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = BatchWriter::new(Sink::Stdout);
    writer.spawn_flusher(FLUSH_EVERY);
    let stdout = match cfg.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_timer(Timestamps)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer.clone())
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .event_format(AccessLine::default())
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .fmt_fields(Logfmt)
            .with_writer(writer.clone())
            .boxed(),
    };
    let mut guard = LogGuard(vec![writer]);
    let file = cfg.file.as_ref().and_then(|path| {
        match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => {
                let w = BatchWriter::new(Sink::File(Arc::new(Mutex::new(f))));
                w.spawn_flusher(FLUSH_EVERY);
                guard.0.push(w.clone());
                Some(
                    tracing_subscriber::fmt::layer()
                        .with_timer(Timestamps)
                        .json()
                        .flatten_event(true)
                        .with_current_span(false)
                        .with_span_list(false)
                        .with_writer(w)
                        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                            m.target() == ACCESS_TARGET
                        })),
                )
            }
            Err(e) => {
                eprintln!(
                    "notion-gateway: cannot open log.file {}: {e}; request events go to stdout only",
                    path.display()
                );
                None
            }
        }
    });
    // Already installed (tests, embedding): keep the existing subscriber.
    let _ = tracing_subscriber::registry()
        .with(stdout.with_filter(filter))
        .with(file)
        .try_init();
    guard
}

/// The target of the per-request events.
pub const ACCESS_TARGET: &str = "notion_gateway::access";

/// How long a log line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
const BATCH_BYTES: usize = 64 * 1024;

/// A log sink that appends whole lines to a shared buffer and writes it out when it holds
/// [`BATCH_BYTES`], or every [`FLUSH_EVERY`] from a flusher thread. A line costs a short,
/// normally uncontended lock and a copy. Lines are never dropped; at most `FLUSH_EVERY` of
/// them are lost if the process is killed with SIGKILL.
#[derive(Clone)]
pub struct BatchWriter {
    buf: Arc<Mutex<Vec<u8>>>,
    sink: Sink,
}

/// Where a [`BatchWriter`] writes its batches.
#[derive(Clone)]
enum Sink {
    Stdout,
    File(Arc<Mutex<std::fs::File>>),
}

impl BatchWriter {
    fn new(sink: Sink) -> Self {
        Self {
            buf: Arc::new(Mutex::new(Vec::with_capacity(BATCH_BYTES))),
            sink,
        }
    }

    fn spawn_flusher(&self, every: Duration) {
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("notion-gateway-log".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                me.flush();
            });
    }

    fn take(&self) -> Vec<u8> {
        match self.buf.lock() {
            Ok(mut b) => std::mem::replace(&mut *b, Vec::with_capacity(BATCH_BYTES)),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn flush(&self) {
        let out = self.take();
        if out.is_empty() {
            return;
        }
        match &self.sink {
            Sink::Stdout => {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(&out);
                let _ = stdout.flush();
            }
            Sink::File(f) => {
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                let _ = f.write_all(&out);
            }
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            b.extend_from_slice(line);
            b.len() >= BATCH_BYTES
        };
        if full {
            BatchWriter::flush(self);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        BatchWriter::flush(self);
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The pretty line of an access event, written with plain string writes: the same text as
/// tracing-subscriber's full format without colours (`<timestamp>  INFO <target>: <fields>`),
/// which spends ~1.5k instructions per line in `core::fmt` around the fields. Every other
/// event, a coloured terminal, or an event inside a span goes to the full format itself.
struct AccessLine {
    full:
        tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, Timestamps>,
}

impl Default for AccessLine {
    fn default() -> Self {
        Self {
            full: tracing_subscriber::fmt::format().with_timer(Timestamps),
        }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for AccessLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime as _;
        let meta = event.metadata();
        if meta.target() != ACCESS_TARGET
            || *meta.level() != tracing::Level::INFO
            || writer.has_ansi_escapes()
            || ctx.event_scope().is_some()
        {
            return self.full.format_event(ctx, writer, event);
        }
        if Timestamps.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        writer.write_str("  INFO ")?;
        writer.write_str(ACCESS_TARGET)?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_str("\n")
    }
}

/// Fields as `key=value` pairs (logfmt): strings written as they are unless they need quotes.
///
/// tracing-subscriber's default field formatter escapes every value through `Debug` and styles
/// every name; in a callgrind profile it was most of what an access-log line cost. The fields
/// are collected into a reused buffer and handed to the writer once: each write to the
/// `Writer` is a dynamic call, and with one or two per field (and `core::fmt` for integers)
/// they cost more than the text itself.
struct Logfmt;

impl<'w> FormatFields<'w> for Logfmt {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let mut write = |buf: &mut String| {
            buf.clear();
            let mut v = LogfmtVisitor {
                buf: &mut *buf,
                first: true,
            };
            fields.record(&mut v);
            writer.write_str(buf)
        };
        LINE.try_with(|line| match line.try_borrow_mut() {
            Ok(mut buf) => write(&mut buf),
            Err(_) => write(&mut String::new()),
        })
        .unwrap_or_else(|_| write(&mut String::new()))
    }
}

struct LogfmtVisitor<'b> {
    buf: &'b mut String,
    first: bool,
}

impl LogfmtVisitor<'_> {
    /// Writes `name=` (or nothing, for the message) after a separating space.
    fn key(&mut self, field: &Field) {
        if !std::mem::take(&mut self.first) {
            self.buf.push(' ');
        }
        if field.name() != "message" {
            self.buf.push_str(field.name());
            self.buf.push('=');
        }
    }

    fn put(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        self.key(field);
        // Writing into a `String` cannot fail.
        let _ = self.buf.write_fmt(value);
    }

    fn put_u64(&mut self, field: &Field, mut n: u64) {
        self.key(field);
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            self.buf.push(char::from(d));
        }
    }
}

impl Visit for LogfmtVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        /// The bytes a logfmt value is quoted for: space, `"`, `=` and ASCII controls.
        const QUOTED: [bool; 256] = {
            let mut t = [false; 256];
            let mut b = 0;
            while b < 256 {
                t[b] = b < 0x20
                    || b == 0x7f
                    || b == b' ' as usize
                    || b == b'"' as usize
                    || b == b'=' as usize;
                b += 1;
            }
            t
        };
        if field.name() == "message"
            || (!value.is_empty() && !value.bytes().any(|b| QUOTED[usize::from(b)]))
        {
            self.key(field);
            self.buf.push_str(value);
        } else if value.is_empty() {
            self.key(field);
            self.buf.push_str("\"\"");
        } else {
            self.put(field, format_args!("{value:?}"));
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put_u64(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if value < 0 {
            self.put(field, format_args!("{value}"));
        } else {
            self.put_u64(field, value.unsigned_abs());
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.buf.push_str(if value { "true" } else { "false" });
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Durations in milliseconds, three decimals: whole thousandths written as integers
        // (`core::fmt`'s exact float formatting was ~0.6k instructions per access line).
        let thousandths = (value * 1000.0).round();
        if (0.0..1e15).contains(&thousandths) {
            let n = thousandths as u64;
            self.put_u64(field, n / 1000);
            let frac = n % 1000;
            self.buf.push('.');
            for d in [frac / 100, frac / 10 % 10, frac % 10] {
                self.buf.push(char::from(b'0' + d as u8));
            }
        } else {
            self.put(field, format_args!("{value:.3}"));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format_args!("{value:?}"));
    }
}

/// The timestamps of tracing-subscriber's `SystemTime` timer (`2026-12-02T07:01:24.671119Z`,
/// UTC, microseconds), with the date and time of day worked out once per second per thread
/// rather than formatted through `core::fmt` for every line.
struct Timestamps;

impl tracing_subscriber::fmt::time::FormatTime for Timestamps {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        thread_local! {
            static SECOND: std::cell::Cell<(u64, [u8; 19])> =
                const { std::cell::Cell::new((u64::MAX, [0; 19])) };
        }
        let fallback =
            |w: &mut Writer<'_>| tracing_subscriber::fmt::time::SystemTime.format_time(w);
        let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else {
            return fallback(w);
        };
        let secs = now.as_secs();
        let prefix = match SECOND.try_with(std::cell::Cell::get) {
            Ok((s, p)) if s == secs => p,
            _ => match civil_seconds(secs) {
                Some(p) => {
                    let _ = SECOND.try_with(|c| c.set((secs, p)));
                    p
                }
                None => return fallback(w),
            },
        };
        let mut out = [0u8; 27];
        out[..19].copy_from_slice(&prefix);
        out[19] = b'.';
        let mut micros = now.subsec_micros();
        for i in (20..26).rev() {
            out[i] = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        out[26] = b'Z';
        match std::str::from_utf8(&out) {
            Ok(s) => w.write_str(s),
            Err(_) => fallback(w),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time, for years up to 9999 (the proleptic Gregorian
/// calendar: H. Hinnant's `civil_from_days`).
fn civil_seconds(secs: u64) -> Option<[u8; 19]> {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    if year > 9999 {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3_600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    Some(out)
}

/// What the access log records about one proxied request. Holds cheap clones (reference-
/// counted URI and header values), so building it allocates nothing.
pub struct RequestLog {
    pub method: http::Method,
    uri: http::Uri,
    request_id: HeaderValue,
    /// The shaper's name for the token: integration name or hash prefix.
    pub integration: Option<std::sync::Arc<str>>,
    /// The name of the gateway key the caller presented (`[[keys]]`), if any.
    pub key: Option<std::sync::Arc<str>>,
    pub request_bytes: Option<u64>,
    /// Time spent queued for the budget, over all attempts.
    pub queue_wait: Duration,
    /// Upstream attempts made (Notion's 429/529 are answered by sending again).
    pub attempts: u32,
    /// Status of the last upstream answer, when there was one.
    pub upstream_status: Option<u16>,
    /// Route template of the endpoint catalogue (`/v1/pages/{id}`), `unknown` outside it.
    pub route: &'static str,
    /// How each failed attempt ended (`502`, `reset`, `connect`, `timeout`, ...), in order;
    /// empty (and unallocated) when the first attempt answered.
    pub failed_attempts: Vec<&'static str>,
    /// Per upstream attempt, in order: what it got (`200`, `502`, `429`, `reset`, ...) and
    /// Notion's `x-notion-request-id` when it sent one (Notion support asks for them).
    pub attempt_log: Vec<(&'static str, Option<HeaderValue>)>,
    status: u16,
    duration: Duration,
    notion_request_id: Option<HeaderValue>,
    pub error: Option<&'static str>,
}

impl RequestLog {
    pub fn new<B>(req: &Request<B>, request_id: &HeaderValue) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            request_id: request_id.clone(),
            integration: None,
            key: None,
            request_bytes: req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            queue_wait: Duration::ZERO,
            attempts: 0,
            upstream_status: None,
            route: crate::catalogue::UNKNOWN,
            failed_attempts: Vec::new(),
            attempt_log: Vec::new(),
            status: 0,
            duration: Duration::ZERO,
            notion_request_id: None,
            error: None,
        }
    }

    pub fn finish(&mut self, resp: &Response, duration: Duration) {
        self.status = resp.status().as_u16();
        self.duration = duration;
        self.notion_request_id = resp.headers().get(&NOTION_REQUEST_ID).cloned();
    }
}

fn text(v: Option<&HeaderValue>) -> &str {
    v.and_then(|v| v.to_str().ok()).unwrap_or("")
}

pub fn log_request(l: &RequestLog) {
    tracing::info!(
        target: ACCESS_TARGET,
        method = l.method.as_str(),
        route = l.route,
        path = l.uri.path(),
        status = l.status,
        duration_ms = l.duration.as_secs_f64() * 1000.0,
        request_id = text(Some(&l.request_id)),
        notion_request_id = text(l.notion_request_id.as_ref()),
        integration = l.integration.as_deref().unwrap_or("none"),
        key = l.key.as_deref().unwrap_or(""),
        request_bytes = l.request_bytes.unwrap_or(0),
        queue_wait_ms = l.queue_wait.as_secs_f64() * 1000.0,
        attempts = l.attempts,
        failed_attempts = &*failed(&l.failed_attempts),
        notion_request_ids = &*attempt_ids(&l.attempt_log),
        upstream_status = l.upstream_status.unwrap_or(0),
        error = l.error.unwrap_or(""),
        "request"
    );
}

/// `502,reset`: a list as one log value. Borrowed, with no allocation, for none or one item
/// (a request answered by its first attempt).
fn joined<'a>(mut items: impl ExactSizeIterator<Item = &'a str>) -> std::borrow::Cow<'a, str> {
    match items.len() {
        0 => "".into(),
        1 => items.next().unwrap_or("").into(),
        _ => {
            let mut out = String::new();
            for (i, s) in items.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(s);
            }
            out.into()
        }
    }
}

fn failed(items: &[&'static str]) -> std::borrow::Cow<'static, str> {
    joined(items.iter().copied())
}

/// `id1,-,id3`: the `x-notion-request-id` of each attempt (`-` for one that got none); empty
/// when no attempt was made.
fn attempt_ids<'a>(
    attempts: &'a [(&'static str, Option<HeaderValue>)],
) -> std::borrow::Cow<'a, str> {
    joined(attempts.iter().map(|(_, id)| {
        // Notion's ids are UUIDs; anything else (a comma, a space) is not written whole.
        id.as_ref()
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .unwrap_or("-")
    }))
}

/// A request the guard refused before anything else ran.
pub fn log_rejection<B>(req: &Request<B>, err: &GatewayError, request_id: &HeaderValue) {
    tracing::info!(
        target: ACCESS_TARGET,
        method = %req.method(),
        path = req.uri().path(),
        status = err.status().as_u16(),
        request_id = text(Some(request_id)),
        error = err.reason(),
        "request refused"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_attempts_notion_request_id_is_listed_in_order() {
        let ids = [
            ("502", Some(HeaderValue::from_static("a1b2-c3"))),
            ("reset", None),
            ("200", Some(HeaderValue::from_static("not, an id"))),
            ("200", Some(HeaderValue::from_static("d4e5"))),
        ];
        assert_eq!(attempt_ids(&ids), "a1b2-c3,-,-,d4e5");
        assert_eq!(attempt_ids(&ids[2..3]), "-");
        assert_eq!(attempt_ids(&ids[3..]), "d4e5");
        assert_eq!(attempt_ids(&[]), "");
        assert_eq!(failed(&["502", "reset"]), "502,reset");
        assert_eq!(failed(&["502"]), "502");
    }

    #[test]
    fn timestamps_are_tracing_subscribers() {
        let day = |secs| String::from_utf8(civil_seconds(secs).unwrap().to_vec()).unwrap();
        assert_eq!(day(0), "1970-01-01T00:00:00");
        assert_eq!(day(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(day(951_868_799), "2000-02-29T23:59:59");
        assert_eq!(day(1_764_661_284), "2025-12-02T07:41:24");
        assert_eq!(day(4_102_444_800), "2100-01-01T00:00:00");
        assert_eq!(day(253_402_300_799), "9999-12-31T23:59:59");
        assert!(civil_seconds(253_402_300_800).is_none());
        // The same text as tracing-subscriber's own timer, to the second (retried across a
        // second's edge).
        let format = |t: &dyn tracing_subscriber::fmt::time::FormatTime| {
            let mut s = String::new();
            t.format_time(&mut Writer::new(&mut s)).unwrap();
            s
        };
        for _ in 0..3 {
            let ours = format(&Timestamps);
            let theirs = format(&tracing_subscriber::fmt::time::SystemTime);
            assert_eq!(ours.len(), theirs.len(), "{ours} / {theirs}");
            if ours[..19] == theirs[..19] {
                assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
                return;
            }
        }
        panic!("timestamps differ");
    }

    #[test]
    fn access_lines_are_tracing_subscribers_full_format() {
        let line = |fast: bool| {
            let cap = Capture::default();
            let w = cap.clone();
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .fmt_fields(Logfmt)
                .with_writer(move || w.clone());
            let layer = if fast {
                layer.event_format(AccessLine::default()).boxed()
            } else {
                layer.with_timer(Timestamps).boxed()
            };
            use tracing_subscriber::layer::SubscriberExt as _;
            use tracing_subscriber::Layer as _;
            let sub = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(sub, || {
                let mut l = RequestLog::new(
                    &Request::get("/v1/users/me").body(()).unwrap(),
                    &HeaderValue::from_static("rid-1"),
                );
                l.attempts = 1;
                log_request(&l);
                tracing::warn!(target: ACCESS_TARGET, path = "/v1/x", "other level");
                tracing::info!(path = "/v1/x", "other target");
            });
            let out = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
            // Timestamps differ: compare what follows them.
            out.lines()
                .map(|l| l.split_once(' ').unwrap().1.to_owned())
                .collect::<Vec<_>>()
        };
        let (ours, theirs) = (line(true), line(false));
        assert_eq!(ours.len(), 3, "{ours:?}");
        assert!(ours[0].starts_with(" INFO notion_gateway::access: request method=GET"));
        assert_eq!(ours, theirs);
    }

    #[test]
    fn logfmt_writes_plain_values_and_quotes_the_rest() {
        let cap = Capture::default();
        let w = cap.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .fmt_fields(Logfmt)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(
                path = "/v1/pages/abc",
                status = 200u64,
                duration_ms = 1.23456f64,
                wait_ms = 0.0f64,
                long_ms = 12345.0006f64,
                note = "two words",
                empty = "",
                method = %http::Method::PATCH,
                big = u64::MAX,
                zero = 0u64,
                negative = -12i64,
                flag = true,
                newline = "a\nb",
                eq = "a=b",
                del = "a\u{7f}",
                "request"
            );
        });
        let out = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            out.trim_end(),
            r#" INFO request path=/v1/pages/abc status=200 duration_ms=1.235 wait_ms=0.000 long_ms=12345.001 note="two words" empty="" method=PATCH big=18446744073709551615 zero=0 negative=-12 flag=true newline="a\nb" eq="a=b" del="a\u{7f}""#
        );
    }
}
