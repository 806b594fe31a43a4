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
/// Hex digits after the prefix: 256 random bits.
const KEY_HEX_DIGITS: usize = 64;

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
    /// The last slot the key's own `rate` gave out (the next is one interval later, at the
    /// rate in force then).
    last_slot: Mutex<Option<Instant>>,
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

    /// Who the caller is, from its `Authorization` value: `Some(key)` for a gateway key,
    /// `None` for a Notion token the mode lets through; anything else is refused before it
    /// costs any state. A value that holds the key prefix anywhere (any case, any spacing)
    /// and is not exactly a configured key is refused in every mode: a gateway key, even a
    /// mangled one, never goes to Notion. Only keys of the form `keys new` makes are accepted
    /// (the prefix and 64 lower-case hex digits), so a hand-made weak key never works.
    pub fn resolve(&self, authorization: &HeaderValue) -> Result<Option<Arc<Key>>, GatewayError> {
        let table = self.current();
        let credential = crate::headers::credential_of(authorization);
        if has_key_prefix(authorization.as_bytes()) {
            if !is_key_shaped(credential) {
                return Err(GatewayError::UnknownKey);
            }
            let digest: [u8; 32] = Sha256::digest(credential).into();
            return match table.keys.get(&digest) {
                Some(k) if !k.is_revoked() => Ok(Some(k.clone())),
                _ => Err(GatewayError::UnknownKey),
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

    /// Applies a reloaded configuration's access mode and keys. Keys that stay (same digest,
    /// same integration) keep their state; removed keys, and keys moved to another
    /// integration, are revoked: their waiting requests are answered 401 at once.
    pub fn apply(&self, config: &Config) -> Applied {
        let old = self.current();
        let new = Arc::new(Table::build(config, Some(&old)));
        let added = new
            .keys
            .keys()
            .filter(|d| !old.keys.contains_key(*d))
            .count();
        let keys = new.keys.len();
        // The new table first: a request resolving from now on cannot find a revoked key.
        match self.table.write() {
            Ok(mut t) => *t = new.clone(),
            Err(poisoned) => *poisoned.into_inner() = new.clone(),
        }
        let mut revoked = 0;
        for (digest, key) in &old.keys {
            let stays = new
                .keys
                .get(digest)
                .is_some_and(|k| Arc::ptr_eq(&k.state, &key.state));
            if !stays {
                key.state.revoked.send_replace(true);
                revoked += 1;
            }
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
                // A key keeps its state while it stays on the same integration; moved to
                // another, it is a new key (and the old one is revoked).
                let state = old
                    .and_then(|t| t.keys.get(&k.key_sha256))
                    .filter(|o| o.integration == k.integration)
                    .map(|o| o.state.clone())
                    .unwrap_or_else(|| {
                        Arc::new(KeyState {
                            revoked: watch::Sender::new(false),
                            last_slot: Mutex::new(None),
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
        // Validation keeps the rate within [0.001, 1000] per second.
        let interval = Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::from_secs(1000));
        let mut last = match self.state.last_slot.lock() {
            Ok(n) => n,
            Err(poisoned) => poisoned.into_inner(),
        };
        let at = last
            .and_then(|t| t.checked_add(interval))
            .map_or(now, |t| t.max(now));
        if at - now > max_wait {
            return Err(at - now);
        }
        *last = Some(at);
        Ok(at)
    }

    /// Whether a reload has removed the key.
    pub fn is_revoked(&self) -> bool {
        *self.state.revoked.borrow()
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

/// Whether an `Authorization` value holds the key prefix anywhere, in any case.
fn has_key_prefix(value: &[u8]) -> bool {
    value
        .windows(KEY_PREFIX.len())
        .any(|w| w.eq_ignore_ascii_case(KEY_PREFIX.as_bytes()))
}

/// The prefix and 64 lower-case hex digits, as [`new_key`] makes them.
fn is_key_shaped(credential: &[u8]) -> bool {
    credential.len() == KEY_PREFIX.len() + KEY_HEX_DIGITS
        && credential.starts_with(KEY_PREFIX.as_bytes())
        && credential[KEY_PREFIX.len()..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
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
        assert!(is_key_shaped(a.as_bytes()));
        assert!(!is_key_shaped(b"ngw_alice"));
        assert!(!is_key_shaped(a.to_uppercase().as_bytes()));
        assert!(has_key_prefix(b"Bearer\tNGW_x") && has_key_prefix(b"x ngw_"));
        assert!(!has_key_prefix(b"Bearer ntn_abc"));
    }
}
