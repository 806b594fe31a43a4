//! The path guard and the catalogue's classification.
//!
//! Properties, for any path: no panic; an accepted path has no raw `\` and no dot segment
//! (`.` or `..`) once its segments are percent-decoded, once or twice, and split at every `/`
//! and `\` they contain (decoded here independently of the guard); classifying an accepted path
//! gives the same endpoint as classifying its decoded form (`path::normalize`).
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use notion_gateway::{catalogue, path};
use percent_encoding::percent_decode_str;

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
    Method::PUT,
];

fn has_dot_segment(text: &str) -> bool {
    text.split(['/', '\\']).any(|s| s == "." || s == "..")
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let Ok(tail) = std::str::from_utf8(rest) else {
        return;
    };
    // Paths as hyper hands them over: starting with `/`, no query (the query is not guarded).
    let p = format!("/{}", tail.split(['?', '#']).next().unwrap_or(""));
    let method = &METHODS[usize::from(m) % METHODS.len()];
    let accepted = path::check(&p).is_ok();
    let normalized = path::normalize(&p);
    let endpoint = catalogue::classify(method, &p);
    if !accepted {
        return;
    }
    assert!(!p.contains('\\'), "accepted a raw backslash: {p:?}");
    for seg in p.split('/') {
        let once = percent_decode_str(seg).decode_utf8_lossy();
        assert!(!has_dot_segment(&once), "accepted a dot segment: {p:?}");
        let twice = percent_decode_str(&once).decode_utf8_lossy();
        assert!(
            !has_dot_segment(&twice),
            "accepted a doubly encoded dot segment: {p:?}"
        );
    }
    let normalized = normalized.expect("an accepted path decodes");
    assert_eq!(
        endpoint,
        catalogue::classify(method, &normalized),
        "{method} {p:?} and its decoded form {normalized:?} are classified differently"
    );
});
