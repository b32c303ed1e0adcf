//! Links Coffer accepts from merchants and links it hands to customers.
//!
//! A link a merchant gives for a page (`redirect_url`, GatePay's `returnUrl` and `cancelUrl`)
//! is accepted only as an absolute `http://` or `https://` URL with a host, no spaces or control
//! characters and no credentials ([`is_page_link`]); pages check again before rendering one
//! ([`renderable_link`]). [`payment_link`] is the EIP-681 link a wallet opens to pay an order.

use coffer_store::OrderRow;

/// The longest page link accepted from a merchant: one length rule for every family.
pub const MAX_PAGE_LINK: usize = 2048;

/// The longest stored link a page still renders.
const MAX_RENDERED_LINK: usize = MAX_PAGE_LINK;

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

/// The EIP-681 link a wallet understands: a token transfer, or a plain value transfer, of what
/// is still due on the order (its amount less what was paid), so a customer who scans it after
/// a partial payment is never asked for too much.
pub fn payment_link(order: &OrderRow) -> String {
    let units = order
        .amount
        .checked_sub(order.amount_paid)
        .unwrap_or(coffer_core::Amount::ZERO)
        .base_units();
    match &order.asset_address {
        Some(token) => format!(
            "ethereum:{token}@{}/transfer?address={}&uint256={units}",
            order.chain_id, order.receiving_address
        ),
        None => format!(
            "ethereum:{}@{}?value={units}",
            order.receiving_address, order.chain_id
        ),
    }
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
}
