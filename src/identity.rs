//! Who a request belongs to, without ever keeping the secret.
//!
//! A Notion token (`Authorization: Bearer ntn_...`, or the `Basic` client credentials of the
//! OAuth endpoints) is reduced at once to a [`TokenId`]: the first 12 hex digits of its SHA-256.
//! That id is what logs, metrics and `/status` show; the token itself is only ever forwarded to
//! the upstream inside the request's own headers.

use http::HeaderMap;
use sha2::{Digest, Sha256};

/// First 12 hex digits of the SHA-256 of a credential: stable, short, not reversible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId([u8; 12]);

impl TokenId {
    pub fn of(credential: &[u8]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(credential);
        let mut out = [0u8; 12];
        for (i, b) in digest[..6].iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        Self(out)
    }

    pub fn as_str(&self) -> &str {
        // Always ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::fmt::Display for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of the request's credential (see [`crate::headers::credential`]).
pub fn token_id(headers: &HeaderMap) -> Option<TokenId> {
    crate::headers::credential(headers).map(TokenId::of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, HeaderValue};

    #[test]
    fn id_is_a_hash_prefix_and_never_the_token() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer ntn_secret_123"),
        );
        let id = token_id(&h).unwrap();
        assert_eq!(id.as_str().len(), 12);
        assert!(!id.as_str().contains("secret"));
        assert_eq!(id, TokenId::of(b"ntn_secret_123"));
    }

    #[test]
    fn no_authorization_no_id() {
        assert!(token_id(&HeaderMap::new()).is_none());
    }
}
