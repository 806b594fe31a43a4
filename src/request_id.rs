//! Request ids: every response carries `x-request-id`, the caller's own or one the gateway
//! makes, and the gateway's error bodies quote it.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderValue};

use crate::headers::REQUEST_ID;

/// Longest caller `x-request-id` the gateway passes on; longer ones are replaced.
pub const MAX_LEN: usize = 200;

/// The caller's `x-request-id`, if it may be kept: exactly one header, 1 to [`MAX_LEN`] bytes
/// of visible ASCII (`!` to `~`). Anything else is replaced by a generated id, so a 64 KiB or
/// binary value is never echoed, logged or forwarded.
pub fn callers(headers: &HeaderMap) -> Option<&HeaderValue> {
    let mut all = headers.get_all(&REQUEST_ID).iter();
    let v = all.next()?;
    let b = v.as_bytes();
    let ok = all.next().is_none()
        && !b.is_empty()
        && b.len() <= MAX_LEN
        && b.iter().all(|c| (b'!'..=b'~').contains(c));
    ok.then_some(v)
}

/// Makes request ids that look like random UUIDs: a random per-process half and a counter half
/// (scrambled), so ids are unique within a process and collide across processes only by
/// chance. Unlike `Uuid::new_v4`, no `getrandom` syscall per request.
pub struct RequestIds {
    seed: [u8; 16],
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIds {
    pub fn new() -> Self {
        Self {
            seed: *uuid::Uuid::new_v4().as_bytes(),
            counter: AtomicU64::new(1),
        }
    }

    pub fn next(&self) -> HeaderValue {
        let n = self
            .counter
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(u64::from_le_bytes([
                self.seed[0],
                self.seed[1],
                self.seed[2],
                self.seed[3],
                self.seed[4],
                self.seed[5],
                self.seed[6],
                self.seed[7],
            ]));
        // splitmix64 scrambles the counter; the version/variant bits uuid sets take 2 of its 64
        // bits, so ids repeat only by (astronomically unlikely) chance.
        let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let mut bytes = self.seed;
        bytes[8..].copy_from_slice(&z.to_be_bytes());
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut buf = uuid::Uuid::encode_buffer();
        let text = id.hyphenated().encode_lower(&mut buf);
        HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&REQUEST_ID, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn only_one_short_visible_ascii_id_is_kept() {
        let long = vec![b'a'; MAX_LEN];
        assert!(callers(&with(&[b"req-1"])).is_some());
        assert!(callers(&with(&[&long])).is_some());
        let longer = vec![b'a'; MAX_LEN + 1];
        for bad in [
            with(&[]),
            with(&[b""]),
            with(&[&longer]),
            with(&[b"has space"]),
            with(&[b"tab\there"]),
            with(&[b"caf\xc3\xa9"]),
            with(&[b"a", b"b"]),
        ] {
            assert!(callers(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_uuids_and_unique() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(a.to_str().unwrap()).is_ok());
        assert!(callers(&with(&[a.as_bytes()])).is_some());
    }
}
