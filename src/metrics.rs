//! Metric names, and the calls that record them, in one place.
//!
//! Recorded through the `metrics` facade; nothing is exported until a recorder is installed
//! (`/metrics`, PRODUCT.md P5). Labels are bounded: route templates of the endpoint catalogue
//! (never an id), outcome and reason names from fixed lists, never a token.

/// Upstream attempts, by `route` and `outcome` (`2xx`, `4xx`, `429`, `529`, `5xx`, `connect`,
/// `reset`, `timeout`, `error`).
pub const UPSTREAM_ATTEMPTS: &str = "notion_gateway_upstream_attempts_total";
/// Retries sent, by `route` and `reason` (what the failed attempt ended with).
pub const RETRIES: &str = "notion_gateway_retries_total";
/// Failed attempts that were not retried although their class allows it, by `route` and `why`
/// (`attempts`, `deadline`, `budget`).
pub const RETRIES_DENIED: &str = "notion_gateway_retries_denied_total";

pub fn upstream_attempt(route: &'static str, outcome: &'static str) {
    metrics::counter!(UPSTREAM_ATTEMPTS, "route" => route, "outcome" => outcome).increment(1);
}

pub fn retry(route: &'static str, reason: &'static str) {
    metrics::counter!(RETRIES, "route" => route, "reason" => reason).increment(1);
}

pub fn retry_denied(route: &'static str, why: &'static str) {
    metrics::counter!(RETRIES_DENIED, "route" => route, "why" => why).increment(1);
}

/// The `outcome` label of an upstream answer's status.
pub fn status_outcome(status: u16) -> &'static str {
    match status {
        429 => "429",
        529 => "529",
        500..=599 => "5xx",
        400..=499 => "4xx",
        _ => "2xx",
    }
}
