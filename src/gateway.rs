//! State shared by every connection and request: the validated configuration, the upstream
//! client, the shaper, the retry budget, the metrics handle and the hard-stop signal.
//!
//! It sits below both the HTTP surface ([`crate::app`], [`crate::admin`]) and the pipeline
//! ([`crate::proxy`]), which all receive it by reference; it imports neither. Shared by `Arc`,
//! so nothing depends on how many times a service is cloned or instantiated per connection.

use tokio::sync::watch;

use crate::config::Config;
use crate::shaper::Shaper;
use crate::upstream::Upstream;

/// State shared by every connection and request.
pub struct Gateway {
    pub config: Config,
    pub upstream: Upstream,
    pub shaper: Shaper,
    /// Gateway keys and the access mode; swapped whole by a reload.
    pub access: crate::access::Access,
    pub retries: crate::retry::Retries,
    /// Renders `/metrics`; `None` when another metrics recorder was installed first.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Flips to `true` when the drain deadline passes: requests still waiting answer 503.
    hard_stop: watch::Receiver<bool>,
}

impl Gateway {
    pub fn new(
        config: Config,
        hard_stop: watch::Receiver<bool>,
    ) -> Result<Self, crate::body::BoxError> {
        let upstream = Upstream::new(&config.upstream)?;
        let redis = match config.limits.shared.clone() {
            Some(cfg) => Some(crate::shaper::redis::RedisBudgets::new(cfg)?),
            None => None,
        };
        let shaper = Shaper::with_redis(config.limits.clone(), redis);
        let retries = crate::retry::Retries::new(config.retry.clone());
        let access = crate::access::Access::new(&config);
        Ok(Self {
            config,
            upstream,
            shaper,
            access,
            retries,
            metrics: crate::metrics::install(),
            hard_stop,
        })
    }

    /// Applies a reloaded configuration (SIGHUP): the access mode, the keys and the
    /// integrations' tokens (a rotated `token_file`) take effect for the next request; queued
    /// and in-flight requests go on, except those of removed keys, answered 401. Everything
    /// else in the file is read at start-up only: a change there is reported as needing a
    /// restart. An unreadable or invalid file changes nothing.
    pub fn reload(&self, reloaded: Result<Config, String>) {
        let new = match reloaded {
            Ok(c) => c,
            Err(error) => {
                crate::metrics::config_reload(false);
                tracing::error!(%error, "configuration reload failed; the running configuration stays");
                return;
            }
        };
        let rotated = self.shaper.rotate_tokens(&new.limits.integrations);
        let applied = self.access.apply(&new);
        crate::metrics::config_reload(true);
        let restart = restart_only_changes(&self.config, &new);
        tracing::info!(
            access_mode = new.access.mode.name(),
            keys = applied.keys,
            keys_added = applied.added,
            keys_revoked = applied.revoked,
            tokens_rotated = %rotated.join(","),
            "configuration reloaded"
        );
        if !restart.is_empty() {
            tracing::warn!(
                sections = %restart.join(", "),
                "configuration reloaded, but changes to these sections take effect only after a restart"
            );
        }
    }

    /// Resolves when the drain deadline has passed. Never resolves if shutdown never comes.
    pub async fn hard_stopped(&self) {
        let mut rx = self.hard_stop.clone();
        if rx.wait_for(|stop| *stop).await.is_err() {
            // The sender is gone only after `run` returned; nothing will stop us then.
            std::future::pending::<()>().await;
        }
    }
}

/// The sections of `new` that differ from the running configuration and that a reload does
/// not apply (everything but `[access]`, `[[keys]]` and the integrations' tokens).
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    // The validated sections print every value they hold (held tokens redacted), so equal
    // text is an equal section.
    let same =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let strip = |c: &Config| {
        let mut l = c.limits.clone();
        for i in &mut l.integrations {
            i.token_sha256 = [0; 32];
            i.token = None;
        }
        l
    };
    let mut out = Vec::new();
    if !same(&running.server, &new.server) {
        out.push("server");
    }
    if !same(&running.upstream, &new.upstream) {
        out.push("upstream");
    }
    if !same(&running.log, &new.log) {
        out.push("log");
    }
    if !same(&strip(running), &strip(new)) {
        out.push("limits/integrations/workspaces");
    }
    if !same(&running.retry, &new.retry) {
        out.push("retry");
    }
    if !same(&running.errors, &new.errors) {
        out.push("errors");
    }
    out
}
