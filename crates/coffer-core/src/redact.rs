//! URLs made safe to show: what leaves the process (API answers, readiness, logs, CLI output)
//! never carries a URL whole.
//!
//! RPC providers put their API keys in a URL's path (`https://…/v2/<KEY>`), its query string
//! (`?apikey=…`) or its user info (`https://user:pass@host`), and HTTP client errors append the
//! URL they failed on. [`redact_url`] keeps only the scheme, host and port of a URL;
//! [`redact_urls`] does that to every `scheme://…` found in a piece of text, for error messages
//! whose origin is not known.

use std::borrow::Cow;

/// Characters that end a URL inside free text.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '`' | '\\')
}

/// Punctuation that may close a sentence or a parenthesis right after a URL; kept as text.
fn trailing_punctuation(c: char) -> bool {
    matches!(c, '.' | ',' | ';' | ':' | '!' | '?' | ')' | ']' | '}')
}

fn scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')
}

/// A URL safe to show: `scheme://host[:port]`, followed by `/…` when anything else — user info,
/// a path other than `/`, query or fragment — was removed. Text that is not `scheme://…` becomes
/// `<invalid url>`.
///
/// ```
/// use coffer_core::redact::redact_url;
/// assert_eq!(redact_url("https://base.g.alchemy.com/v2/KEY"), "https://base.g.alchemy.com/…");
/// assert_eq!(redact_url("https://user:pw@rpc.example:8545"), "https://rpc.example:8545/…");
/// assert_eq!(redact_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid url>".to_owned();
    };
    if scheme.is_empty() || !scheme.chars().all(scheme_char) {
        return "<invalid url>".to_owned();
    }
    // User info ends at the last `@` before the query or fragment. Searching that far (rather
    // than only up to the first `/`) hides a malformed password containing `/` too.
    let before_query = rest.split(['?', '#']).next().unwrap_or_default();
    let (had_user_info, after_user_info) = match before_query.rfind('@') {
        Some(at) => (true, &rest[at + 1..]),
        None => (false, rest),
    };
    let host = after_user_info
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let remainder = &after_user_info[host.len()..];
    let hidden = had_user_info || !(remainder.is_empty() || remainder == "/");
    format!("{scheme}://{host}{}", if hidden { "/…" } else { "" })
}

/// `text` with every `scheme://…` in it replaced by [`redact_url`]'s form; borrowed when there
/// was none.
///
/// A URL runs until whitespace or a quote; punctuation right after it (a closing parenthesis,
/// a full stop) is kept.
///
/// ```
/// use coffer_core::redact::redact_urls;
/// assert_eq!(
///     redact_urls("error sending request for url (https://rpc.example/v2/KEY?apikey=K2)"),
///     "error sending request for url (https://rpc.example/…)"
/// );
/// ```
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let separator = search + found;
        let scheme_start = text[..separator]
            .char_indices()
            .rev()
            .take_while(|(_, c)| scheme_char(*c))
            .last()
            .map_or(separator, |(i, _)| i);
        // A scheme starts with a letter; skip digits or signs glued before it.
        let scheme_start = text[scheme_start..separator]
            .char_indices()
            .find(|(_, c)| c.is_ascii_alphabetic())
            .map_or(separator, |(i, _)| scheme_start + i);
        let after = separator + 3;
        let mut end = text[after..]
            .char_indices()
            .find(|(_, c)| ends_url(*c))
            .map_or(text.len(), |(i, _)| after + i);
        while end > after
            && text[..end]
                .chars()
                .next_back()
                .is_some_and(trailing_punctuation)
        {
            end -= 1;
        }
        if scheme_start == separator {
            // `://` with no scheme before it: still hide what follows, it may be a URL whose
            // scheme was cut off.
            out.push_str(&text[copied..after]);
            if end > after {
                out.push('…');
            }
        } else {
            out.push_str(&text[copied..scheme_start]);
            out.push_str(&redact_url(&text[scheme_start..end]));
        }
        copied = end;
        search = end.max(after);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRETS: [&str; 4] = ["SEKRETKEY123", "SEKRETKEY456", "SEKRETPASS", "sekretuser"];

    #[test]
    fn keys_in_paths_queries_and_user_info_are_hidden() {
        assert_eq!(
            redact_url("https://base-mainnet.g.alchemy.com/v2/SEKRETKEY123"),
            "https://base-mainnet.g.alchemy.com/…"
        );
        assert_eq!(
            redact_url("https://rpc.example?apikey=SEKRETKEY456"),
            "https://rpc.example/…"
        );
        assert_eq!(
            redact_url("https://sekretuser:SEKRETPASS@rpc.example:8545"),
            "https://rpc.example:8545/…"
        );
        assert_eq!(
            redact_url("https://u:SEKRET/PASS@rpc.example/x"),
            "https://rpc.example/…"
        );
        assert_eq!(redact_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
        assert_eq!(redact_url("http://[::1]:8545/"), "http://[::1]:8545");
        assert_eq!(redact_url("http://[::1]:8545/x"), "http://[::1]:8545/…");
        assert_eq!(redact_url("nonsense"), "<invalid url>");
        assert_eq!(redact_url("a b://x"), "<invalid url>");
    }

    #[test]
    fn urls_inside_error_text_are_redacted_and_the_rest_kept() {
        let text = "error sending request for url (http://127.0.0.1:9/v2/SEKRETKEY123?apikey=SEKRETKEY456): \
                    connection refused; also \"https://sekretuser:SEKRETPASS@rpc.example\".";
        let redacted = redact_urls(text);
        assert_eq!(
            redacted,
            "error sending request for url (http://127.0.0.1:9/…): connection refused; also \
             \"https://rpc.example/…\"."
        );
        assert!(matches!(redact_urls("no url here"), Cow::Borrowed(_)));
        assert_eq!(redact_urls("://SEKRETKEY123 left"), "://… left");
        assert_eq!(redact_urls("x-1http://h/SEKRETKEY123"), "x-1http://h/…");
    }

    #[test]
    fn redacted_text_never_contains_a_secret() {
        let cases = [
            "https://h/v2/SEKRETKEY123",
            "(https://h/v2/SEKRETKEY123)",
            "url=https://sekretuser:SEKRETPASS@h:1/path?apikey=SEKRETKEY456#frag",
            "two: http://h/SEKRETKEY123 and wss://sekretuser:SEKRETPASS@h",
            "glued:http://h?apikey=SEKRETKEY456,next",
            "http://sekretuser:SEKRETPASS@h)",
        ];
        for case in cases {
            let redacted = redact_urls(case);
            for secret in SECRETS {
                assert!(!redacted.contains(secret), "{case} → {redacted}");
            }
        }
    }
}
