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
        Ok(Self {
            config,
            upstream,
            shaper,
            retries,
            metrics: crate::metrics::install(),
            hard_stop,
        })
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
