//! Shaping (PRODUCT.md P2): per-token and per-workspace queues released at Notion's pace.
//!
//! Being built in pieces, each a pure function of time or data and tested on its own:
//! [`queue::FairQueue`] decides *which* waiting request goes next (FIFO per caller, weighted
//! round robin across callers); `crate::limiter::Gcra` decides *when* a key's budget allows it.
//! The dispatcher that joins them (one timer per key, cancellation, early 429s, pauses on
//! Notion's 429/529) and its wiring into the request path come next; until then the gateway
//! forwards without pacing.

pub mod queue;
