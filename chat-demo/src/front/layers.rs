//! What the chat router's answers go through, from `tower-http`: security
//! headers, the request body limit, the access log, and the chat page's
//! compression and Content-Security-Policy.

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::routing::MethodRouter;
use http::{HeaderValue, Request, Response, header};
use sha2::{Digest, Sha256};
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{Level, Span};

use super::{INDEX_HTML, MAX_BODY_BYTES};

/// The access log's target, for `RUST_LOG` (`chat_demo::access=debug`).
const ACCESS_LOG: &str = "chat_demo::access";

/// The chat page's policy: nothing loads from elsewhere; the page's own
/// inline script and style run by their SHA-256 (so a script that got into
/// the page some other way would not), the favicon is a `data:` URL,
/// sockets and `POST /api/room` go to this origin, and no other site may
/// frame the page (clickjacking).
static PAGE_POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = page_policy(INDEX_HTML);
    // Invariant: the policy is ASCII text (fixed directives and base64).
    #[allow(clippy::expect_used)]
    HeaderValue::from_str(&policy).expect("the page policy is a valid header value")
});

/// Builds the page's Content-Security-Policy from its HTML.
fn page_policy(html: &str) -> String {
    let scripts = inline_hashes(html, "script");
    let styles = inline_hashes(html, "style");
    format!(
        "default-src 'none'; script-src 'self'{scripts}; style-src 'self'{styles}; \
         img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// ` 'sha256-…'` for the text of every inline `<tag>` element of `html` (one
/// without a `src`), as the browser hashes it: the exact bytes between the
/// opening and the closing tag.
fn inline_hashes(html: &str, tag: &str) -> String {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut out = String::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        // `<scripts` or `<style-x` are other elements.
        if !after.starts_with(['>', ' ', '\t', '\n', '\r']) {
            rest = after;
            continue;
        }
        let Some(tag_end) = after.find('>') else {
            break;
        };
        let attributes = &after[..tag_end];
        let body = &after[tag_end + 1..];
        let Some(body_end) = body.find(&close) else {
            break;
        };
        if !attributes.contains("src=") {
            let digest = Sha256::digest(&body.as_bytes()[..body_end]);
            out.push_str(" 'sha256-");
            out.push_str(&base64(&digest));
            out.push('\'');
        }
        rest = &body[body_end + close.len()..];
    }
    out
}

/// Standard base64 with padding (what CSP hashes use).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The chat page's route: its policy, no framing for browsers that predate
/// `frame-ancestors`, revalidation on each load (so a new version of the
/// server is not shown an old page), and gzip for clients that take it.
pub(super) fn page_route<S>(route: MethodRouter<S>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    route
        .layer::<_, Infallible>(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            PAGE_POLICY.clone(),
        ))
        .layer::<_, Infallible>(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer::<_, Infallible>(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        .layer::<_, Infallible>(CompressionLayer::new().gzip(true))
}

/// Every route: no content sniffing (error texts repeat what the client
/// sent), no referrer, request bodies bounded by [`MAX_BODY_BYTES`] (413
/// beyond), and one access-log line per request at `debug`.
pub(super) fn around(router: Router) -> Router {
    router
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_eos(())
                // 5xx answers are logged by the handlers that give them, at
                // the level they deserve; the access log stays at debug.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
}

/// The access log's span. It names the route pattern, never the path: a
/// path or query can hold a private room's id, which lets anyone join it.
fn request_span(req: &Request<Body>) -> Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", MatchedPath::as_str);
    tracing::debug_span!(target: ACCESS_LOG, "http", method = %req.method(), route)
}

fn log_response<B>(response: &Response<B>, latency: Duration, _span: &Span) {
    crate::counters::http_response(response.status());
    tracing::debug!(
        target: ACCESS_LOG,
        status = response.status().as_u16(),
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn inline_elements_are_hashed_as_browsers_hash_them() {
        // SHA-256 of "alert(1)" and of "" in base64, computed independently.
        let html = "<scripts>x</scripts><script>alert(1)</script>\
                    <script src=\"/app.js\"></script><script type=\"module\"></script>";
        assert_eq!(
            inline_hashes(html, "script"),
            " 'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI=' \
             'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
        assert_eq!(inline_hashes("<style>\n</style", "style"), "");
    }

    #[test]
    fn the_page_policy_names_its_inline_code_and_forbids_framing() {
        let policy = page_policy(INDEX_HTML);
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        let script = policy
            .split(';')
            .find(|d| d.trim_start().starts_with("script-src"))
            .expect("script-src");
        assert!(script.contains("'sha256-"), "{policy}");
        assert!(PAGE_POLICY.to_str().is_ok_and(|v| v == policy));
    }
}
