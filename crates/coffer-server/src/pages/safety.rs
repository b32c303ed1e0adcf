//! What keeps the HTML Coffer serves safe for the customers who open it.
//!
//! - **Links are http(s) only.** A link a merchant gives for a page (`redirect_url`,
//!   GatePay's `returnUrl` and `cancelUrl`) is accepted only as an absolute `http://` or
//!   `https://` URL with a host, no spaces or control characters and no credentials
//!   ([`coffer_gateway::links::is_page_link`]); pages check again before rendering one
//!   ([`coffer_gateway::links::renderable_link`]), so a
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
