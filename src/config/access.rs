//! `[access]` and `[[keys]]`, validated: who may use the gateway, and the gateway keys that
//! stand in for the Notion tokens the gateway holds (docs/team.md).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::surface::{RawAccess, RawIntegration, RawKey};
use super::{parse_sha256, Integration};

/// Who may use the gateway (`[access] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    /// Any Notion token passes through; gateway keys work too.
    Open,
    /// Gateway keys only.
    Keys,
    /// Gateway keys, and the tokens of configured `[[integrations]]`.
    Configured,
}

impl AccessMode {
    pub fn name(self) -> &'static str {
        match self {
            AccessMode::Open => "open",
            AccessMode::Keys => "keys",
            AccessMode::Configured => "configured",
        }
    }
}

/// How a key's waiting requests are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPriority {
    Normal,
    /// Only from budget that no normal request of its token or workspace is waiting for.
    Background,
}

/// `[access]` and the keys.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub mode: AccessMode,
    pub keys: Vec<KeyConfig>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            mode: AccessMode::Open,
            keys: Vec::new(),
        }
    }
}

/// One `[[keys]]` entry: only the key's digest is known, never the key.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub name: Arc<str>,
    pub key_sha256: [u8; 32],
    /// The integration's name (its token is [`KeyConfig::token`]).
    pub integration: Arc<str>,
    /// What the gateway sends Notion instead of the key.
    pub token: HeldToken,
    /// The integration token's digest: the budget the key spends.
    pub token_sha256: [u8; 32],
    /// Share of the integration's token in its fair queue.
    pub weight: u32,
    /// Requests per second at most for this key.
    pub rate: Option<f64>,
    pub priority: KeyPriority,
    /// Longest a request waits in the queue; `None`: `limits.max_wait` (normal keys, as a
    /// prediction) or the request deadline (background keys).
    pub max_wait: Option<Duration>,
}

/// A Notion token the gateway holds (`token_env` or `token_file` of an integration), as the
/// `Authorization` value sent in place of a gateway key. Marked sensitive; never printed.
#[derive(Clone)]
pub struct HeldToken(HeaderValue);

impl HeldToken {
    /// `token` as read from the environment or a file (whitespace and a `Bearer ` prefix are
    /// dropped).
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        let token = token.strip_prefix("Bearer ").unwrap_or(token);
        let mut v = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the token holds characters a header cannot carry".to_string())?;
        v.set_sensitive(true);
        Ok(Self(v))
    }

    pub fn header(&self) -> &HeaderValue {
        &self.0
    }
}

impl std::fmt::Debug for HeldToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldToken(<redacted>)")
    }
}

/// A key name: a metric label, so at most 64 letters, digits and `-_.@`.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

/// Most keys one configuration may hold (a reload builds the table in one go).
pub const MAX_KEYS: usize = 100_000;

/// Validates `[access]` and `[[keys]]` against the validated integrations. A key of an
/// integration that was left out (its `token_env` is empty) is left out too (`load` warns).
/// Errors are `(key, problem)`.
pub(super) fn validate(
    access: &RawAccess,
    keys: &[RawKey],
    integrations: &[Integration],
    configured: &[RawIntegration],
    request_timeout: Duration,
) -> Result<AccessConfig, (&'static str, String)> {
    let mode = match access.mode.as_str() {
        "open" => AccessMode::Open,
        "keys" => AccessMode::Keys,
        "configured" => AccessMode::Configured,
        other => {
            return Err((
                "access.mode",
                format!("`{other}` must be \"open\", \"keys\" or \"configured\""),
            ))
        }
    };
    if keys.len() > MAX_KEYS {
        return Err(("keys", format!("at most {MAX_KEYS} keys")));
    }
    let mut out: Vec<KeyConfig> = Vec::with_capacity(keys.len());
    let mut names = std::collections::HashSet::with_capacity(keys.len());
    let mut digests = std::collections::HashSet::with_capacity(keys.len());
    for k in keys {
        let problem = |p: String| ("keys", format!("`{}`: {p}", k.name));
        if k.name.trim().is_empty() {
            return Err(("keys", "every key needs a name".into()));
        }
        if !valid_key_name(&k.name) {
            return Err(problem(
                "a name is at most 64 letters, digits and - _ . @ (it is a metric label)".into(),
            ));
        }
        let key_sha256 = parse_sha256(&k.key_sha256)
            .map_err(|_| problem("key_sha256 must be 64 hex digits".into()))?;
        if !names.insert(k.name.as_str()) || !digests.insert(key_sha256) {
            return Err(problem("same name or key_sha256 as another key".into()));
        }
        let Some(integration) = integrations.iter().find(|i| *i.name == *k.integration) else {
            if configured.iter().any(|i| i.name == k.integration) {
                continue;
            }
            return Err(problem(format!(
                "integration `{}` is not an [[integrations]] entry",
                k.integration
            )));
        };
        let token = integration.token.clone().ok_or_else(|| {
            problem(format!(
                "integration `{}` holds no token: give it token_env or token_file",
                k.integration
            ))
        })?;
        let weight = k.weight.unwrap_or(1);
        if !(1..=1000).contains(&weight) {
            return Err(problem("weight must be between 1 and 1000".into()));
        }
        if let Some(r) = k.rate {
            if !(r.is_finite() && (0.001..=1000.0).contains(&r)) {
                return Err(problem(
                    "rate must be between 0.001 and 1000 requests per second".into(),
                ));
            }
        }
        let priority = match k.priority.as_deref() {
            None | Some("normal") => KeyPriority::Normal,
            Some("background") => KeyPriority::Background,
            Some(other) => {
                return Err(problem(format!(
                    "priority `{other}` must be \"normal\" or \"background\""
                )))
            }
        };
        if k.max_wait
            .is_some_and(|d| d.is_zero() || d > request_timeout)
        {
            return Err(problem(format!(
                "max_wait must be greater than zero and at most server.request_timeout ({}), \
                 which bounds every wait",
                humantime::format_duration(request_timeout)
            )));
        }
        out.push(KeyConfig {
            name: Arc::from(k.name.as_str()),
            key_sha256,
            integration: integration.name.clone(),
            token,
            token_sha256: integration.token_sha256,
            weight,
            rate: k.rate,
            priority,
            max_wait: k.max_wait,
        });
    }
    Ok(AccessConfig { mode, keys: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_token_is_never_printed() {
        let t = HeldToken::new("Bearer ntn_secret_1\n").unwrap();
        assert_eq!(t.header().as_bytes(), b"Bearer ntn_secret_1");
        assert!(t.header().is_sensitive());
        assert!(!format!("{t:?}").contains("secret"));
    }
}
