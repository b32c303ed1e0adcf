//! What keeps the HTML Coffer serves safe for the customers who open it.
//!
//! - **Links are http(s) only.** A link a merchant gives for a page (`redirect_url`,
//!   GatePay's `returnUrl` and `cancelUrl`) is accepted only as an absolute `http://` or
//!   `https://` URL with a host, no spaces or control characters and no credentials
//!   ([`is_page_link`]); pages check again before rendering one ([`renderable_link`]), so a
//!   `javascript:`, `data:` or protocol-relative value that reached the database some other way
//!   is never shown or followed.
//! - **Every HTML answer carries strict headers** ([`secure_responses`], a layer over the whole
//!   router): a `Content-Security-Policy` that runs no script unless the page names it by hash
//!   (pages set their own, see [`policy_with_hashes`]; anything else gets [`DEFAULT_POLICY`],
//!   which runs no script at all), `X-Frame-Options: DENY` with `frame-ancestors 'none'`,
//!   `Referrer-Policy: no-referrer`; and every answer carries `X-Content-Type-Options: nosniff`.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};

/// The policy of an HTML answer that did not set its own: no script, no plugins, no framing,
/// nothing loaded from elsewhere; inline styles and same-origin images only.
pub const DEFAULT_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The longest stored link a page still renders.
const MAX_RENDERED_LINK: usize = 2048;

/// Whether `text` may be put on a page as a link: an absolute `http://` or `https://` URL (any
/// letter case) of at most `max_len` bytes, with a host, without whitespace, control characters
/// or credentials.
///
/// The text itself must start with the scheme: browsers (and URL parsers) drop leading spaces
/// and control characters and tabs or newlines inside a scheme, so `" javascript:"` or
/// `"java\tscript:"` are refused here rather than cleaned up.
pub fn is_page_link(text: &str, max_len: usize) -> bool {
    let starts_with = |prefix: &str| {
        text.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    if text.len() > max_len
        || !(starts_with("http://") || starts_with("https://"))
        || text.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return false;
    }
    match url::Url::parse(text) {
        Ok(url) => {
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some_and(|host| !host.is_empty())
                && url.username().is_empty()
                && url.password().is_none()
        }
        Err(_) => false,
    }
}

/// A stored link, if a page may render it (see [`is_page_link`]); anything else is dropped.
pub fn renderable_link(stored: Option<&str>) -> Option<&str> {
    stored.filter(|link| is_page_link(link, MAX_RENDERED_LINK))
}

/// `'sha256-…'`, the CSP source that allows exactly this inline script or style.
pub fn csp_hash(inline: &str) -> String {
    let digest = Sha256::digest(inline.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// A page's policy: only the inline `scripts` and `styles` given (by hash) run or apply;
/// images and `fetch` go to Coffer itself only; no plugins, forms, `<base>` or framing.
pub fn policy_with_hashes(scripts: &[&str], styles: &[&str]) -> String {
    let hashes = |inline: &[&str]| {
        if inline.is_empty() {
            return "'none'".to_owned();
        }
        inline
            .iter()
            .map(|text| csp_hash(text))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; img-src 'self'; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hashes(scripts),
        hashes(styles)
    )
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let value = value.trim_start().to_ascii_lowercase();
            value.starts_with("text/html") || value.starts_with("image/svg+xml")
        })
}

/// Adds the security headers to an answer (a layer over the whole router, so every page is
/// covered, the paywall's included): `nosniff` on everything; on HTML and SVG, the default
/// policy unless the handler set a stricter one, no framing and no referrer.
pub async fn secure_responses(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if is_html(headers) {
        if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(DEFAULT_POLICY),
            );
        }
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        if !headers.contains_key(header::REFERRER_POLICY) {
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_and_https_links_are_page_links() {
        for good in [
            "https://shop.example/paid",
            "http://127.0.0.1:8080/thanks?order=1#top",
            "HTTPS://Shop.Example/",
            "https://[::1]/x",
        ] {
            assert!(is_page_link(good, 512), "{good}");
        }
        for bad in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            " javascript:alert(1)",
            "java\tscript:alert(1)",
            "\u{0}javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox(1)",
            "//evil.example/x",
            "/relative",
            "https:evil.example",
            "https:/evil.example",
            "https://",
            "https:// evil.example",
            "https://user:pass@shop.example/",
            "https://shop.example@evil.example/",
            "ftp://shop.example/",
            "https://shop.example/\npath",
            "",
        ] {
            assert!(!is_page_link(bad, 512), "{bad:?}");
        }
        assert!(!is_page_link(
            &format!("https://a.example/{}", "x".repeat(600)),
            512
        ));
    }

    #[test]
    fn a_stored_link_that_is_not_http_is_never_rendered() {
        assert_eq!(renderable_link(Some("javascript:alert(1)")), None);
        assert_eq!(
            renderable_link(Some("https://shop.example/")),
            Some("https://shop.example/")
        );
        assert_eq!(renderable_link(None), None);
    }

    #[test]
    fn hashes_are_base64_sha256_of_the_exact_text() {
        // printf 'alert(1)' | openssl dgst -sha256 -binary | base64
        assert_eq!(
            csp_hash("alert(1)"),
            "'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"
        );
        let policy = policy_with_hashes(&["alert(1)"], &[]);
        assert!(policy.contains("script-src 'sha256-"));
        assert!(!policy.contains("unsafe-inline"));
        assert!(policy.contains("frame-ancestors 'none'"));
    }
}
