//! Who may use the gateway, at run time: gateway keys and the access mode (docs/team.md).
//!
//! A caller with a gateway key (`Authorization: Bearer ngw_…`) never holds the Notion token:
//! the key is reduced at once to its SHA-256, looked up among the configured digests, and the
//! request goes on as the key's integration would (its token, its budgets), queued under the
//! key's name. The key itself is never kept, forwarded, logged or exported.
//!
//! The table is swapped whole by a reload ([`Access::apply`], on SIGHUP): a request holds the
//! table it started with, so nothing waits for a reload and a reload waits for nothing. State
//! that must outlive a reload (the key's pacing, counters, and the signal that revokes its
//! waiting requests) is kept per key digest and carried into the new table.
//!
//! Constant time, by construction: the key is hashed (SHA-256) before anything looks at it,
//! and the only comparison is the table's lookup of that digest, never of the secret against
//! a stored value: how long a lookup takes says nothing about the key (finding a key whose
//! digest shares a prefix with a configured one is as hard as inverting SHA-256).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::HeaderValue;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{AccessMode, Config, KeyPriority};
use crate::error::GatewayError;

/// The prefix of every gateway key (`notion-gateway keys new`).
pub const KEY_PREFIX: &str = "ngw_";

/// The access mode and the key table in force.
pub struct Access {
    table: RwLock<Arc<Table>>,
}

struct Table {
    mode: AccessMode,
    keys: HashMap<[u8; 32], Arc<Key>>,
    /// Digests of the configured integrations' tokens (`configured` mode lets them through).
    integrations: HashSet<[u8; 32]>,
}

/// A configured gateway key, as a request uses it.
pub struct Key {
    pub name: Arc<str>,
    pub integration: Arc<str>,
    /// The integration's `Authorization` value, sent to Notion in place of the key.
    pub token: HeaderValue,
    pub weight: u32,
    pub priority: KeyPriority,
    pub max_wait: Option<Duration>,
    rate: Option<f64>,
    state: Arc<KeyState>,
}

/// What a key keeps across reloads.
struct KeyState {
    /// `true` once a reload removed the key: its waiting requests are answered 401.
    revoked: watch::Sender<bool>,
    /// When the key's own `rate` lets its next request go.
    next_at: Mutex<Option<Instant>>,
    requests: AtomicU64,
    active: AtomicUsize,
}

/// What a reload changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub keys: usize,
    pub added: usize,
    pub revoked: usize,
}

/// One key in `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyStatus {
    pub name: String,
    pub integration: String,
    pub priority: &'static str,
    pub weight: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Requests since the key was configured (kept across reloads).
    pub requests: u64,
    /// Requests of the key in the gateway now (queued, or on their way to Notion).
    pub active: usize,
}

impl Access {
    pub fn new(config: &Config) -> Self {
        Self {
            table: RwLock::new(Arc::new(Table::build(config, None))),
        }
    }

    fn current(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn mode(&self) -> AccessMode {
        self.current().mode
    }

    /// Who the bearer credential is: `Some(key)` for a gateway key, `None` for a Notion token
    /// the mode lets through; anything else is refused before it costs any state.
    pub fn resolve(&self, credential: &[u8]) -> Result<Option<Arc<Key>>, GatewayError> {
        let table = self.current();
        if credential.starts_with(KEY_PREFIX.as_bytes()) {
            let digest: [u8; 32] = Sha256::digest(credential).into();
            return match table.keys.get(&digest) {
                Some(k) => Ok(Some(k.clone())),
                None => Err(GatewayError::UnknownKey),
            };
        }
        match table.mode {
            AccessMode::Open => Ok(None),
            AccessMode::Keys => Err(GatewayError::KeysOnly),
            AccessMode::Configured => {
                let digest: [u8; 32] = Sha256::digest(credential).into();
                if table.integrations.contains(&digest) {
                    Ok(None)
                } else {
                    Err(GatewayError::KeysOnly)
                }
            }
        }
    }

    /// Applies a reloaded configuration's access mode and keys. Keys that stay keep their
    /// state; the waiting requests of removed keys are answered 401 at once.
    pub fn apply(&self, config: &Config) -> Applied {
        let old = self.current();
        let new = Arc::new(Table::build(config, Some(&old)));
        let added = new
            .keys
            .keys()
            .filter(|d| !old.keys.contains_key(*d))
            .count();
        let mut revoked = 0;
        for (digest, key) in &old.keys {
            if !new.keys.contains_key(digest) {
                key.state.revoked.send_replace(true);
                revoked += 1;
            }
        }
        let keys = new.keys.len();
        match self.table.write() {
            Ok(mut t) => *t = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        Applied {
            keys,
            added,
            revoked,
        }
    }

    /// Every configured key, by name.
    pub fn status(&self) -> Vec<KeyStatus> {
        let table = self.current();
        let mut out: Vec<KeyStatus> = table
            .keys
            .values()
            .map(|k| KeyStatus {
                name: k.name.to_string(),
                integration: k.integration.to_string(),
                priority: match k.priority {
                    KeyPriority::Normal => "normal",
                    KeyPriority::Background => "background",
                },
                weight: k.weight,
                rate: k.rate,
                requests: k.state.requests.load(Ordering::Relaxed),
                active: k.state.active.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

impl Table {
    fn build(config: &Config, old: Option<&Table>) -> Self {
        let keys = config
            .access
            .keys
            .iter()
            .map(|k| {
                let state = old
                    .and_then(|t| t.keys.get(&k.key_sha256))
                    .map(|o| o.state.clone())
                    .unwrap_or_else(|| {
                        Arc::new(KeyState {
                            revoked: watch::Sender::new(false),
                            next_at: Mutex::new(None),
                            requests: AtomicU64::new(0),
                            active: AtomicUsize::new(0),
                        })
                    });
                let key = Key {
                    name: k.name.clone(),
                    integration: k.integration.clone(),
                    token: k.token.header().clone(),
                    weight: k.weight,
                    priority: k.priority,
                    max_wait: k.max_wait,
                    rate: k.rate,
                    state,
                };
                (k.key_sha256, Arc::new(key))
            })
            .collect();
        let integrations = config
            .limits
            .integrations
            .iter()
            .map(|i| i.token_sha256)
            .collect();
        Self {
            mode: config.access.mode,
            keys,
            integrations,
        }
    }
}

impl Key {
    /// Reserves the key's next slot under its own `rate`: when the request may go, or how
    /// long it would have to wait when that is more than `max_wait`.
    pub fn pace(&self, now: Instant, max_wait: Duration) -> Result<Instant, Duration> {
        let Some(rate) = self.rate else {
            return Ok(now);
        };
        let mut next = match self.state.next_at.lock() {
            Ok(n) => n,
            Err(poisoned) => poisoned.into_inner(),
        };
        let at = next.map_or(now, |t| t.max(now));
        if at - now > max_wait {
            return Err(at - now);
        }
        *next = Some(at + Duration::from_secs_f64(1.0 / rate));
        Ok(at)
    }

    /// Resolves once a reload has removed the key.
    pub async fn revoked(&self) {
        let mut rx = self.state.revoked.subscribe();
        if rx.wait_for(|r| *r).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Counts a request of the key, and it as active until the guard is dropped.
    pub fn start_request(&self) -> Active {
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        self.state.active.fetch_add(1, Ordering::Relaxed);
        Active(self.state.clone())
    }
}

/// A key's request in the gateway (see [`KeyStatus::active`]).
pub struct Active(Arc<KeyState>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A new gateway key: the prefix and 32 random bytes in hex (256 bits).
pub fn new_key() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the system: {e}"))?;
    let mut key = String::with_capacity(KEY_PREFIX.len() + 64);
    key.push_str(KEY_PREFIX);
    for b in bytes {
        key.push_str(&format!("{b:02x}"));
    }
    Ok(key)
}

/// Lower-case hex SHA-256 of `key` (what `key_sha256` holds).
pub fn key_digest_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keys_are_prefixed_random_and_digested() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert_eq!(key_digest_hex(&a).len(), 64);
    }
}
