//! The Notion endpoint catalogue: every public endpoint as method + path template, with what a
//! repeat of it would do.
//!
//! The class follows what the endpoint does, not its HTTP method: `POST /v1/search` only reads,
//! `PATCH /v1/blocks/{id}/children` appends a new copy each time. Paths not listed fall back to
//! the method's usual meaning, with POST and PATCH treated as unsafe. The template is also the
//! route label of logs and metrics: ids never become labels, so the label set is bounded.
//!
//! Source: the endpoint definitions of Notion's official SDK (`@notionhq/client` 5.x,
//! `src/api-endpoints/*.ts`) and the API reference, as of 2026-11.

use http::Method;

/// What sending a request twice would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// Changes nothing: a repeat is harmless.
    ReadOnly,
    /// Sets state: a repeat leaves the same state (update, delete, move, revoke).
    Idempotent,
    /// Creates or appends: a repeat makes a second copy.
    NonIdempotent,
}

impl Safety {
    /// Whether a request of this class may be repeated after an answer that does not prove
    /// Notion left it unprocessed (a 5xx, a broken connection, a timeout).
    pub fn repeatable(self) -> bool {
        !matches!(self, Safety::NonIdempotent)
    }
}

/// A catalogue entry, or the fallback for a path it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// `/v1/pages/{id}`; [`UNKNOWN`] for paths outside the catalogue.
    pub template: &'static str,
    pub safety: Safety,
    /// Refines the class from a JSON body that can be read (see [`Endpoint::safety_for`]).
    refine: Refine,
}

/// The route label of a path the catalogue does not know.
pub const UNKNOWN: &str = "unknown";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refine {
    None,
    /// `PATCH /v1/pages/{id}` with a `template` applies it: the template's content is added
    /// again on every call.
    PageTemplate,
    /// `PATCH /v1/pages/{id}/markdown`: only a whole-page `replace_content` is idempotent;
    /// `insert_content` adds, and range edits find different text the second time.
    Markdown,
}

impl Endpoint {
    /// The class of this call, given its body when it was kept in memory. A body that cannot be
    /// read as JSON keeps the more cautious class.
    pub fn safety_for(&self, body: Option<&[u8]>) -> Safety {
        match self.refine {
            Refine::None => self.safety,
            Refine::PageTemplate => match json(body) {
                Some(v) if v.get("template").is_none_or(serde_json::Value::is_null) => {
                    Safety::Idempotent
                }
                _ => Safety::NonIdempotent,
            },
            Refine::Markdown => match json(body) {
                Some(v) if v.get("type").and_then(|t| t.as_str()) == Some("replace_content") => {
                    Safety::Idempotent
                }
                _ => Safety::NonIdempotent,
            },
        }
    }
}

fn json(body: Option<&[u8]>) -> Option<serde_json::Value> {
    serde_json::from_slice(body.unwrap_or(b"{}")).ok()
}

use Safety::{Idempotent as I, NonIdempotent as N, ReadOnly as R};

const fn e(method: &'static str, template: &'static str, safety: Safety) -> Route {
    Route {
        method,
        template,
        safety,
        refine: Refine::None,
    }
}

struct Route {
    method: &'static str,
    template: &'static str,
    safety: Safety,
    refine: Refine,
}

/// Literal segments come before `{id}` at the same place (`/v1/users/me` before
/// `/v1/users/{id}`): the first match wins.
const ROUTES: &[Route] = &[
    // Users
    e("GET", "/v1/users", R),
    e("GET", "/v1/users/me", R),
    e("GET", "/v1/users/{id}", R),
    // Pages
    e("POST", "/v1/pages", N),
    e("GET", "/v1/pages/{id}", R),
    Route {
        method: "PATCH",
        template: "/v1/pages/{id}",
        safety: I,
        refine: Refine::PageTemplate,
    },
    e("POST", "/v1/pages/{id}/move", I),
    e("GET", "/v1/pages/{id}/markdown", R),
    Route {
        method: "PATCH",
        template: "/v1/pages/{id}/markdown",
        safety: N,
        refine: Refine::Markdown,
    },
    e("GET", "/v1/pages/{id}/properties/{property_id}", R),
    // Blocks
    e("POST", "/v1/blocks/meeting_notes", N),
    e("POST", "/v1/blocks/meeting_notes/query", R),
    e("GET", "/v1/blocks/{id}", R),
    e("PATCH", "/v1/blocks/{id}", I),
    e("DELETE", "/v1/blocks/{id}", I),
    e("GET", "/v1/blocks/{id}/children", R),
    e("PATCH", "/v1/blocks/{id}/children", N),
    // Databases (`query` and the list are the pre-2025-09-03 API, still served)
    e("GET", "/v1/databases", R),
    e("POST", "/v1/databases", N),
    e("GET", "/v1/databases/{id}", R),
    e("PATCH", "/v1/databases/{id}", I),
    e("POST", "/v1/databases/{id}/query", R),
    // Data sources
    e("POST", "/v1/data_sources", N),
    e("GET", "/v1/data_sources/{id}", R),
    e("PATCH", "/v1/data_sources/{id}", I),
    e("POST", "/v1/data_sources/{id}/query", R),
    e("GET", "/v1/data_sources/{id}/templates", R),
    // Views. Creating a view query only caches a result set that expires by itself.
    e("GET", "/v1/views", R),
    e("POST", "/v1/views", N),
    e("GET", "/v1/views/{id}", R),
    e("PATCH", "/v1/views/{id}", I),
    e("DELETE", "/v1/views/{id}", I),
    e("POST", "/v1/views/{id}/queries", R),
    e("GET", "/v1/views/{id}/queries/{query_id}", R),
    e("DELETE", "/v1/views/{id}/queries/{query_id}", I),
    // Search
    e("POST", "/v1/search", R),
    // Comments
    e("GET", "/v1/comments", R),
    e("POST", "/v1/comments", N),
    e("GET", "/v1/comments/{id}", R),
    e("PATCH", "/v1/comments/{id}", I),
    e("DELETE", "/v1/comments/{id}", I),
    // File uploads. Creating one makes a new upload object; sending and completing act on an
    // existing one and a repeat duplicates nothing: a part is named by its `part_number` and a
    // second send of the same part is the same part (parts "may be sent concurrently ... and
    // out of order", https://developers.notion.com/reference/send-a-file-upload), and completing
    // acts on the one upload object: a second completion cannot make a second file.
    e("GET", "/v1/file_uploads", R),
    e("POST", "/v1/file_uploads", N),
    e("GET", "/v1/file_uploads/{id}", R),
    e("POST", "/v1/file_uploads/{id}/send", I),
    e("POST", "/v1/file_uploads/{id}/complete", I),
    // Async tasks, custom emojis
    e("GET", "/v1/async_tasks/{id}", R),
    e("GET", "/v1/custom_emojis", R),
    // OAuth (Basic credentials): a token exchange spends its code; a revoke is a revoke.
    e("POST", "/v1/oauth/token", N),
    e("POST", "/v1/oauth/introspect", R),
    e("POST", "/v1/oauth/revoke", I),
    // Agents (2026)
    e("GET", "/v1/agents", R),
    e("POST", "/v1/agents/query", R),
    e("POST", "/v1/agents/batch", N),
    e("GET", "/v1/agents/{id}", R),
    e("DELETE", "/v1/agents/{id}", I),
    e("GET", "/v1/agents/{id}/insights", R),
    e("PATCH", "/v1/agents/{id}/status", I),
    e("PATCH", "/v1/agents/{id}/credit_limit", I),
    e("POST", "/v1/agents/{id}/chat", N),
    e("GET", "/v1/agents/{id}/threads", R),
    e("POST", "/v1/agents/{id}/threads/query", R),
    e("GET", "/v1/threads/{id}/messages", R),
    e("POST", "/v1/threads/{id}/messages", N),
    e("POST", "/v1/threads/{id}/messages/query", R),
    e("POST", "/v1/threads/{id}/continue", N),
    // Sessions (2026): `POST /v1/sessions` sends a message (and may stream the turn).
    e("POST", "/v1/sessions", N),
    e("POST", "/v1/sessions/query", R),
    e("GET", "/v1/sessions/{id}", R),
    e("POST", "/v1/sessions/{id}/cancel", I),
    e("POST", "/v1/sessions/{id}/events/query", R),
    // Admin API (enterprise organizations, base https://api.notion.com/admin, its own
    // Notion-Version line): the endpoints of its reference, 2026-12
    // (https://developers.notion.com/reference/admin/intro). Releasing a hold, adding the same
    // users to it or revoking sessions twice leaves the same state; an export starts a new one.
    e("GET", "/admin/v1/legal_holds", R),
    e("POST", "/admin/v1/legal_holds/{id}/release", I),
    e("GET", "/admin/v1/legal_holds/{id}/users", R),
    e("POST", "/admin/v1/legal_holds/{id}/users", I),
    e("POST", "/admin/v1/legal_holds/{id}/export", N),
    e("POST", "/admin/v1/managed_users/revoke_session", I),
];

/// The catalogue entry for `method path` (`path` without its query string), or the method's
/// fallback under the route label [`UNKNOWN`].
///
/// Segments are compared percent-decoded (`/v1/blocks/ID/%63hildren` is the children
/// endpoint), except the escapes of `/`, `\` and `%`, which stay encoded, so an escape never
/// moves a segment boundary. Paths with encoded separators or dot segments never get here on
/// the request path (`crate::path::check` refuses them first).
pub fn classify(method: &Method, path: &str) -> Endpoint {
    let path = path.split('?').next().unwrap_or(path);
    let decoded;
    let path = if path.contains('%') {
        decoded = decode_segments(path);
        decoded.as_str()
    } else {
        path
    };
    let path = path.strip_suffix('/').unwrap_or(path);
    ROUTES
        .iter()
        .find(|r| r.method == method.as_str() && matches(r.template, path))
        .map_or_else(
            || Endpoint {
                template: UNKNOWN,
                safety: fallback(method),
                refine: Refine::None,
            },
            |r| Endpoint {
                template: r.template,
                safety: r.safety,
                refine: r.refine,
            },
        )
}

/// The class of an unknown path: GET, HEAD and OPTIONS read; PUT and DELETE set; anything else
/// may create.
fn fallback(method: &Method) -> Safety {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => Safety::ReadOnly,
        Method::PUT | Method::DELETE => Safety::Idempotent,
        _ => Safety::NonIdempotent,
    }
}

/// `path` with each segment percent-decoded, the escapes of `/`, `\` and `%` kept (as `%2F`,
/// `%5C`, `%25`); bytes that are not UTF-8 become U+FFFD.
fn decode_segments(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        for c in percent_encoding::percent_decode_str(seg)
            .decode_utf8_lossy()
            .chars()
        {
            match c {
                '/' => out.push_str("%2F"),
                '\\' => out.push_str("%5C"),
                '%' => out.push_str("%25"),
                c => out.push(c),
            }
        }
    }
    out
}

/// Whether `path` fits `template`, segment by segment; `{...}` matches any non-empty segment.
fn matches(template: &str, path: &str) -> bool {
    // Segment by segment as `split('/')` would pair them, on bytes: this runs for each route
    // until one matches, and splitting both strings anew each time was most of a lookup.
    let (t, p) = (template.as_bytes(), path.as_bytes());
    let (mut i, mut j) = (0, 0);
    loop {
        if t.get(i) == Some(&b'{') {
            // A placeholder takes any non-empty segment.
            while i < t.len() && t[i] != b'/' {
                i += 1;
            }
            let start = j;
            while j < p.len() && p[j] != b'/' {
                j += 1;
            }
            if j == start {
                return false;
            }
        } else {
            while i < t.len() && t[i] != b'/' {
                if p.get(j) != Some(&t[i]) {
                    return false;
                }
                i += 1;
                j += 1;
            }
            if j < p.len() && p[j] != b'/' {
                return false;
            }
        }
        // Both at the end, or both at a `/`.
        match (i == t.len(), j == p.len()) {
            (true, true) => return true,
            (false, false) => {
                i += 1;
                j += 1;
            }
            _ => return false,
        }
    }
}

/// Every catalogue entry as (method, template), for configuration checks and tests.
pub fn entries() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES.iter().map(|r| (r.method, r.template))
}

#[cfg(test)]
mod tests {
    /// The definition `matches` implements: segments of `split('/')` paired, a `{...}`
    /// segment of the template taking any non-empty one.
    fn matches_by_split(template: &str, path: &str) -> bool {
        let mut t = template.split('/');
        let mut p = path.split('/');
        loop {
            match (t.next(), p.next()) {
                (None, None) => return true,
                (Some(ts), Some(ps)) => {
                    let ok = if ts.starts_with('{') {
                        !ps.is_empty()
                    } else {
                        ts == ps
                    };
                    if !ok {
                        return false;
                    }
                }
                _ => return false,
            }
        }
    }

    #[test]
    fn matching_on_bytes_is_matching_by_segments() {
        let mut templates: Vec<&str> = entries().map(|(_, t)| t).collect();
        templates.extend(["", "/", "{id}", "/{a}/{b}", "/v1/x{id}", "/v1/{id}x/y"]);
        let mut paths: Vec<String> = [
            "",
            "/",
            "//",
            "/v1",
            "/v1/",
            "/v1//",
            "/v1/pages",
            "/v1/pages/",
            "/v1/pages//x",
            "/v1/pages/abc",
            "/v1/pages/abc/",
            "/v1/pages/abc/properties/t",
            "/v1/pages/abc/markdown",
            "/v1/blocks/b/children",
            "/v1/blocks//children",
            "/v1/data_sources/d/query",
            "/v1/users/me",
            "/v1/users/meme",
            "/v1/user",
            "/v1/xabc",
            "/v1/x{id}",
            "/v1/{id}x/y",
            "/v1/q/y",
            "a/b",
            "/a/b/c",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        paths.extend(templates.iter().map(|t| t.to_string()));
        paths.extend(templates.iter().map(|t| t.replace("{id}", "1234")));
        for t in &templates {
            for p in &paths {
                assert_eq!(matches(t, p), matches_by_split(t, p), "{t:?} against {p:?}");
            }
        }
    }

    use super::*;

    const DASHED: &str = "59833787-2cf9-4fdf-8782-e53db20768a5";
    const UNDASHED: &str = "598337872cf94fdf8782e53db20768a5";

    fn class(method: &str, path: &str) -> (&'static str, Safety) {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let e = classify(&m, path);
        (e.template, e.safety)
    }

    /// Every entry is found by its own template with ids of every shape, with a trailing
    /// slash, and with a query string; and no entry hides behind an earlier one.
    #[test]
    fn every_entry_is_found_by_its_own_paths() {
        for r in ROUTES {
            for id in [DASHED, UNDASHED, "abc"] {
                let path = r
                    .template
                    .split('/')
                    .map(|s| if s.starts_with('{') { id } else { s })
                    .collect::<Vec<_>>()
                    .join("/");
                for p in [
                    path.clone(),
                    format!("{path}/"),
                    format!("{path}?page_size=10"),
                    format!("{path}/?start_cursor=x"),
                ] {
                    let got = class(r.method, &p);
                    // `{id}` may legitimately be shadowed by a literal sibling only when the id
                    // is that literal (never the case for the ids above).
                    assert_eq!(got, (r.template, r.safety), "{} {p}", r.method);
                }
            }
        }
    }

    #[test]
    fn classes_follow_what_the_endpoint_does() {
        let id = DASHED;
        assert_eq!(class("POST", "/v1/search").1, Safety::ReadOnly);
        assert_eq!(
            class("POST", &format!("/v1/data_sources/{id}/query")).1,
            Safety::ReadOnly
        );
        assert_eq!(
            class("POST", &format!("/v1/databases/{id}/query")).1,
            Safety::ReadOnly
        );
        assert_eq!(class("POST", "/v1/oauth/introspect").1, Safety::ReadOnly);
        assert_eq!(
            class("PATCH", &format!("/v1/blocks/{id}/children")).1,
            Safety::NonIdempotent
        );
        for create in [
            "/v1/pages",
            "/v1/databases",
            "/v1/data_sources",
            "/v1/comments",
            "/v1/views",
            "/v1/oauth/token",
        ] {
            assert_eq!(class("POST", create).1, Safety::NonIdempotent, "{create}");
        }
        assert_eq!(
            class("PATCH", &format!("/v1/pages/{id}")).1,
            Safety::Idempotent
        );
        assert_eq!(
            class("DELETE", &format!("/v1/blocks/{id}")).1,
            Safety::Idempotent
        );
        assert_eq!(
            class("POST", &format!("/v1/pages/{id}/move")).1,
            Safety::Idempotent
        );
        assert_eq!(
            class("GET", "/v1/users/me"),
            ("/v1/users/me", Safety::ReadOnly)
        );
        // A repeat of a part or of the completion duplicates nothing.
        for step in ["send", "complete"] {
            assert_eq!(
                class("POST", &format!("/v1/file_uploads/{id}/{step}")).1,
                Safety::Idempotent,
                "{step}"
            );
        }
        assert_eq!(class("POST", "/v1/file_uploads").1, Safety::NonIdempotent);
        // The Admin API has its own routes, not `unknown`.
        assert_eq!(
            class("GET", "/admin/v1/legal_holds"),
            ("/admin/v1/legal_holds", Safety::ReadOnly)
        );
        assert_eq!(
            class("POST", &format!("/admin/v1/legal_holds/{id}/export")).1,
            Safety::NonIdempotent
        );
    }

    #[test]
    fn the_body_refines_page_updates_and_markdown_edits() {
        let page = classify(&Method::PATCH, &format!("/v1/pages/{DASHED}"));
        assert_eq!(
            page.safety_for(Some(br#"{"properties":{}}"#)),
            Safety::Idempotent
        );
        assert_eq!(page.safety_for(None), Safety::Idempotent);
        assert_eq!(
            page.safety_for(Some(br#"{"template":{"type":"default"}}"#)),
            Safety::NonIdempotent,
            "applying a template adds its content again"
        );
        assert_eq!(page.safety_for(Some(b"not json")), Safety::NonIdempotent);

        let md = classify(&Method::PATCH, &format!("/v1/pages/{DASHED}/markdown"));
        assert_eq!(
            md.safety_for(Some(br#"{"type":"replace_content","replace_content":{}}"#)),
            Safety::Idempotent
        );
        for body in [
            &br#"{"type":"insert_content","insert_content":{}}"#[..],
            br#"{"type":"replace_content_range"}"#,
            b"",
        ] {
            assert_eq!(md.safety_for(Some(body)), Safety::NonIdempotent);
        }
    }

    #[test]
    fn unknown_paths_fall_back_to_the_method_and_one_label() {
        assert_eq!(class("GET", "/v1/brand_new/x"), (UNKNOWN, Safety::ReadOnly));
        assert_eq!(
            class("DELETE", "/v1/brand_new/x"),
            (UNKNOWN, Safety::Idempotent)
        );
        assert_eq!(
            class("POST", "/v1/brand_new"),
            (UNKNOWN, Safety::NonIdempotent)
        );
        assert_eq!(
            class("PATCH", "/v1/brand_new/x"),
            (UNKNOWN, Safety::NonIdempotent)
        );
        // A known path with a method it does not take, an empty id, an extra segment.
        assert_eq!(class("PUT", "/v1/pages").0, UNKNOWN);
        assert_eq!(class("GET", "/v1/pages//properties/x").0, UNKNOWN);
        assert_eq!(
            class("GET", &format!("/v1/users/{DASHED}/extra")).0,
            UNKNOWN
        );
    }

    #[test]
    fn segments_are_classified_decoded_and_escapes_never_move_a_boundary() {
        let id = DASHED;
        assert_eq!(
            class("PATCH", &format!("/v1/blocks/{id}/%63hildren")),
            ("/v1/blocks/{id}/children", Safety::NonIdempotent)
        );
        assert_eq!(
            class(
                "GET",
                &format!("/v1/%62locks/{id}/%63%68ildren?page_size=1")
            ),
            ("/v1/blocks/{id}/children", Safety::ReadOnly)
        );
        // An encoded slash stays inside its segment: never the idempotent block update's
        // `{id}` eating `/children` after a decode (the guard refuses it before this).
        assert_eq!(
            class("PATCH", &format!("/v1/blocks/{id}%2Fchildren")),
            ("/v1/blocks/{id}", Safety::Idempotent)
        );
        assert_eq!(decode_segments("/v1/a%2fb%5C%25"), "/v1/a%2Fb%5C%25");
        assert_eq!(
            class("GET", &format!("/v1/pages/{id}/properties/%2F7eo")).0,
            "/v1/pages/{id}/properties/{property_id}"
        );
    }

    #[test]
    fn templates_are_unique_per_method() {
        let mut seen = std::collections::HashSet::new();
        for (m, t) in entries() {
            assert!(seen.insert((m, t)), "{m} {t} listed twice");
        }
    }
}
