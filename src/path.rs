//! The path guard: which proxied paths may be forwarded at all (docs/behaviour.md §1).
//!
//! The gateway forwards the caller's path byte for byte. That is only safe if no component
//! between the gateway and Notion's router (a CDN, a load balancer, Notion's own framework) can
//! read the path as something else than the gateway did: outside `/v1/`, or as another endpoint
//! with another retry class. [`check`] refuses, segment by segment (the query is not looked at):
//!
//! * **dot segments**, raw or percent-encoded in any case (`.`, `..`, `%2e`, `%2E%2e`), and
//!   segments made only of dots and trailing spaces (`...`, `.. `) or dots before a `;`
//!   parameter (`..;x`), which some servers also resolve;
//! * **separators hidden in a segment**: an encoded `/` or `\` (`%2f`, `%5C`), and a raw `\`,
//!   which some servers treat as `/`. One exception: the last segment of
//!   `/v1/pages/{id}/properties/{property_id}`, because Notion's own property ids contain
//!   encoded slashes (the id of a "Type" property in Notion's examples is `%2F7eo`) and the
//!   official SDK puts them in the path as they are. There the segment, split at its
//!   separators, still may not contain a dot segment;
//! * **empty segments** (`/v1//users`), except a trailing slash: a server that merges slashes
//!   sees another path;
//! * escapes that do not decode cleanly: `%` without two hex digits, bytes that are not UTF-8
//!   (overlong forms such as `%c0%ae` for `.`), control characters (`%00`, `%0a`);
//! * the same dot segments and separators encoded twice (`%252e%252e`), for an upstream that
//!   decodes twice.
//!
//! What passes is forwarded unchanged; [`normalize`] is the form the catalogue classifies
//! (every escape decoded except those of `/`, `\`, `%`, `?` and `#`), so a request cannot
//! choose its retry class by encoding letters.

/// Why a path is refused, for the error message (`the path has {reason}`).
pub type Refusal = &'static str;

/// Whether `path` (the path of an origin-form request target, without its query) may be
/// forwarded.
pub fn check(path: &str) -> Result<(), Refusal> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    // The common case, decided without decoding: letters, digits, `-`, `_` and single `/`s
    // only (no escape, dot, backslash or control character), which every check below passes.
    if rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'/')
        && !rest.starts_with('/')
        && !rest.contains("//")
    {
        return Ok(());
    }
    check_segments(rest)
}

/// [`check`] segment by segment; `rest` is the path without its leading `/`.
fn check_segments(rest: &str) -> Result<(), Refusal> {
    let property_slot = is_property_path(rest);
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg.is_empty() {
            if last {
                continue;
            }
            return Err("an empty segment");
        }
        if seg.contains('\\') {
            return Err("a backslash");
        }
        let decoded = decode(seg)?;
        let separators_allowed = property_slot && last;
        check_decoded(&decoded, separators_allowed)?;
        // An upstream that decodes twice would see this.
        if decoded.contains('%') {
            if let Ok(twice) = decode(&decoded) {
                check_decoded(&twice, separators_allowed)
                    .map_err(|_| "a doubly encoded dot segment or separator")?;
            }
        }
    }
    Ok(())
}

/// The path as the catalogue classifies it: each segment percent-decoded, except the escapes of
/// `/`, `\`, `%`, `?` and `#`, which stay encoded (decoding them would change where segments or
/// the path end). `None` when a segment does not decode (such a path is refused by [`check`]).
pub fn normalize(path: &str) -> Option<String> {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        for c in decode(seg).ok()?.chars() {
            match c {
                '/' => out.push_str("%2F"),
                '\\' => out.push_str("%5C"),
                '%' => out.push_str("%25"),
                '?' => out.push_str("%3F"),
                '#' => out.push_str("%23"),
                c => out.push(c),
            }
        }
    }
    Some(out)
}

/// `v1/pages/{id}/properties/{property_id}` (without the leading `/`).
fn is_property_path(rest: &str) -> bool {
    let mut s = rest.split('/');
    matches!(
        (s.next(), s.next(), s.next(), s.next(), s.next(), s.next()),
        (Some("v1"), Some("pages"), Some(id), Some("properties"), Some(p), None)
            if !id.is_empty() && !p.is_empty()
    )
}

fn check_decoded(seg: &str, separators_allowed: bool) -> Result<(), Refusal> {
    if seg.chars().any(|c| c.is_control()) {
        return Err("a control character");
    }
    if seg.contains(['/', '\\']) {
        if !separators_allowed {
            return Err("an encoded slash or backslash in a segment");
        }
        if seg.split(['/', '\\']).any(is_dot_segment) {
            return Err("a dot segment");
        }
        return Ok(());
    }
    if is_dot_segment(seg) {
        return Err("a dot segment");
    }
    Ok(())
}

/// `.` and `..`, and what some servers read as them: only dots with trailing dots or spaces
/// (`...`, `. `), or dots before a `;` parameter (`..;jsessionid=x`).
fn is_dot_segment(seg: &str) -> bool {
    let before_params = seg.split(';').next().unwrap_or(seg);
    [seg, before_params]
        .iter()
        .any(|s| !s.is_empty() && s.starts_with('.') && s.trim_end_matches(['.', ' ']).is_empty())
}

/// Strict percent-decoding of one segment: every `%` starts two hex digits, and the bytes are
/// UTF-8 (which rules out overlong forms).
fn decode(seg: &str) -> Result<std::borrow::Cow<'_, str>, Refusal> {
    if !seg.contains('%') {
        return Ok(std::borrow::Cow::Borrowed(seg));
    }
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err("an invalid percent escape"),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(std::borrow::Cow::Owned)
        .map_err(|_| "an escape that is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "59833787-2cf9-4fdf-8782-e53db20768a5";

    #[test]
    fn the_fast_path_agrees_with_the_segment_checks() {
        let parts = [
            "",
            "/",
            "//",
            "v1",
            "pages",
            ID,
            "a-b_c",
            ".",
            "..",
            "%2e",
            "%2F",
            "a%5Cb",
            "\\",
            "x y",
            "\u{7}",
            "é",
            ";",
            "properties",
            "title",
        ];
        for a in parts {
            for b in parts {
                for c in parts {
                    for p in [
                        format!("/{a}/{b}/{c}"),
                        format!("/{a}{b}/{c}/"),
                        format!("{a}/{b}{c}"),
                    ] {
                        let rest = p.strip_prefix('/').unwrap_or(&p);
                        assert_eq!(check(&p), check_segments(rest), "{p:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for p in [
            "/v1/users/me".to_string(),
            "/v1/users/".to_string(),
            format!("/v1/blocks/{ID}/children"),
            format!("/v1/blocks/{ID}/%63hildren"),
            format!("/v1/pages/{ID}/properties/title"),
            // Notion's own property ids, as the SDK sends them.
            format!("/v1/pages/{ID}/properties/%2F7eo"),
            format!("/v1/pages/{ID}/properties/%3E%24Pb"),
            format!("/v1/pages/{ID}/properties/)Y7%22"),
            format!("/v1/pages/{ID}/properties/a%5Cb"),
            "/v1/search".to_string(),
            "/v1/a.b/c..d/.e/f.".to_string(),
            "/admin/v1/x".to_string(),
        ] {
            assert_eq!(check(&p), Ok(()), "{p}");
        }
    }

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        for p in [
            "/v1/../x",
            "/v1/./users/me",
            "/v1/pages/../../x",
            "/v1/%2e%2e/x",
            "/v1/%2E%2E/x",
            "/v1/%2e./x",
            "/v1/.%2E/x",
            "/v1/%2e/users/me",
            "/v1/users/..",
            "/v1/users/.",
            "/v1/users/../",
            "/v1/.../x",
            "/v1/..%20/x",
            "/v1/. /x",
            "/v1/..;x/y",
            "/v1/%2e%2e;jsessionid=1/x",
            "/v1/%252e%252e/x",
            "/v1/%252E./x",
        ] {
            assert!(check(p).is_err(), "{p}");
        }
    }

    #[test]
    fn hidden_separators_are_refused() {
        for (p, why) in [
            (
                "/v1/blocks/ID%2Fchildren",
                "an encoded slash or backslash in a segment",
            ),
            (
                "/v1/blocks/ID%2fchildren",
                "an encoded slash or backslash in a segment",
            ),
            ("/v1/..%2fx", "an encoded slash or backslash in a segment"),
            (
                "/v1/blocks/ID%5Cchildren",
                "an encoded slash or backslash in a segment",
            ),
            (
                "/v1/blocks/ID%5cchildren",
                "an encoded slash or backslash in a segment",
            ),
            ("/v1/blocks/ID\\children", "a backslash"),
            (
                "/v1/blocks/ID%252Fchildren",
                "a doubly encoded dot segment or separator",
            ),
            ("/v1//users/me", "an empty segment"),
            ("//v1/users/me", "an empty segment"),
        ] {
            assert_eq!(check(p), Err(why), "{p}");
        }
    }

    #[test]
    fn the_property_slot_allows_separators_but_not_dot_segments_behind_them() {
        let base = format!("/v1/pages/{ID}/properties");
        for bad in ["%2F..%2F..%2Fx", "..%2Fx", "%5C..", "%2F.", "%252F..%252Fx"] {
            assert!(check(&format!("{base}/{bad}")).is_err(), "{bad}");
        }
        // Only the last segment, only of that route.
        assert!(check(&format!("/v1/pages/{ID}%2Fx/properties/y")).is_err());
        assert!(check(&format!("/v1/blocks/{ID}/properties/%2F7eo")).is_err());
        assert!(check(&format!("{base}/%2F7eo/more")).is_err());
    }

    #[test]
    fn escapes_must_decode_cleanly() {
        for (p, why) in [
            ("/v1/users/%zz", "an invalid percent escape"),
            ("/v1/users/%2", "an invalid percent escape"),
            ("/v1/users/%", "an invalid percent escape"),
            ("/v1/users/%c0%ae%c0%ae", "an escape that is not UTF-8"),
            ("/v1/users/%ff", "an escape that is not UTF-8"),
            ("/v1/users/a%00b", "a control character"),
            ("/v1/users/a%0d%0ab", "a control character"),
            ("/v1/users/a%7f", "a control character"),
        ] {
            assert_eq!(check(p), Err(why), "{p}");
        }
        // Multi-byte UTF-8 is fine.
        assert_eq!(check("/v1/users/%E5%90%8D"), Ok(()));
    }

    #[test]
    fn normalize_decodes_all_but_separators_and_percent() {
        assert_eq!(
            normalize("/v1/blocks/X/%63hildren").as_deref(),
            Some("/v1/blocks/X/children")
        );
        assert_eq!(
            normalize("/v1/pages/X/properties/%2f7eo%25").as_deref(),
            Some("/v1/pages/X/properties/%2F7eo%25")
        );
        assert_eq!(
            normalize("/v1/users%3F/me%23").as_deref(),
            Some("/v1/users%3F/me%23")
        );
        assert_eq!(normalize("/v1/%zz"), None);
    }
}
