//! Request paths in one canonical form, so that what a path matches is what it reaches.
//!
//! A paid route (`/premium/*`) is matched on a path and the request is forwarded to an
//! upstream, which resolves the path again. If the two disagree — `/premium/%2e%2e/hits` is
//! under `/premium/` to a naive prefix match and `/hits` to the upstream — paying the cheap
//! route buys another path. [`normalize`] removes the disagreement: it percent-decodes
//! unreserved characters (so `%2e` is a dot), drops empty segments (`//`, which some servers
//! merge), resolves `.` and `..`, and refuses what different servers read differently:
//! encoded slashes and backslashes (`%2f`, `%5c`), a raw backslash, encoded percent signs
//! (`%252e` decodes to `%2e`, a dot to a server that decodes twice), NUL and other control
//! bytes, malformed escapes, escapes that are not UTF-8 (overlong dots such as `%c0%ae`),
//! dot segments with parameters (`..;x`, which Java servers read as `..`), and `..` above the
//! root. The result is matched and forwarded as is, so the upstream sees exactly the path that
//! was matched and paid for.

use std::fmt;

/// Why a path has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an absolute path (`/…`).
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    MalformedEscape,
    /// `%2f`: a slash inside a segment, read as a separator by some servers.
    EncodedSlash,
    /// `\` or `%5c`: a separator to some servers.
    Backslash,
    /// `%25`: an encoded percent sign, which a server that decodes twice reads as an escape.
    EncodedPercent,
    /// NUL or another control byte, raw or encoded.
    ControlByte,
    /// A raw byte outside ASCII (other characters must be percent-encoded).
    NotAscii,
    /// Percent-escapes that do not decode to UTF-8 (such as the overlong dot `%c0%ae`).
    NotUtf8,
    /// A dot segment with parameters (`..;x`), which some servers read as a dot segment.
    AmbiguousDotSegment,
    /// More `..` than there are segments above them.
    AboveRoot,
}

impl PathError {
    /// A stable, machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            PathError::AboveRoot => "PATH_OUTSIDE_ROOT",
            _ => "INVALID_PATH",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "must start with /",
            PathError::MalformedEscape => "a % must be followed by two hex digits",
            PathError::EncodedSlash => "an encoded slash (%2F) is not accepted",
            PathError::Backslash => "a backslash (\\ or %5C) is not accepted",
            PathError::EncodedPercent => "an encoded percent sign (%25) is not accepted",
            PathError::ControlByte => "control characters are not accepted",
            PathError::NotAscii => "characters outside ASCII must be percent-encoded",
            PathError::NotUtf8 => "percent-escapes must decode to UTF-8",
            PathError::AmbiguousDotSegment => "a dot segment may not carry parameters (..;)",
            PathError::AboveRoot => "goes above the root with ..",
        })
    }
}

impl std::error::Error for PathError {}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn refused_byte(byte: u8) -> Option<PathError> {
    match byte {
        b'/' => Some(PathError::EncodedSlash),
        b'\\' => Some(PathError::Backslash),
        b'%' => Some(PathError::EncodedPercent),
        0x00..=0x1f | 0x7f => Some(PathError::ControlByte),
        _ => None,
    }
}

/// One segment in canonical form: unreserved escapes decoded, the others kept with upper-case
/// hex. Also checks that the segment means the same to a server that decodes every escape.
fn canonical_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut canonical = String::with_capacity(raw.len());
    let mut decoded = Vec::with_capacity(raw.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' {
            let value = match (bytes.get(index + 1), bytes.get(index + 2)) {
                (Some(&high), Some(&low)) => hex_value(high)
                    .zip(hex_value(low))
                    .map(|(high, low)| high * 16 + low)
                    .ok_or(PathError::MalformedEscape)?,
                _ => return Err(PathError::MalformedEscape),
            };
            if let Some(error) = refused_byte(value) {
                return Err(error);
            }
            if is_unreserved(value) {
                canonical.push(char::from(value));
            } else {
                canonical.push_str(&format!("%{value:02X}"));
            }
            decoded.push(value);
            index += 3;
        } else {
            if byte == b'\\' {
                return Err(PathError::Backslash);
            }
            if byte.is_ascii_control() {
                return Err(PathError::ControlByte);
            }
            canonical.push(char::from(byte));
            decoded.push(byte);
            index += 1;
        }
    }
    // What a server that decodes everything, and drops `;` parameters, would see.
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    let before_parameters = decoded.split(';').next().unwrap_or_default();
    let is_dot = |s: &str| s == "." || s == "..";
    if is_dot(before_parameters) && !is_dot(&canonical) {
        return Err(PathError::AmbiguousDotSegment);
    }
    Ok(canonical)
}

/// The canonical form of a request path (without its query): see the module docs.
///
/// # Errors
/// [`PathError`] when the path has none, or different servers could read it differently.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    if !raw.is_ascii() {
        return Err(PathError::NotAscii);
    }
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    for raw_segment in rest.split('/') {
        let segment = canonical_segment(raw_segment)?;
        trailing_slash = matches!(segment.as_str(), "" | "." | "..");
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
            }
            _ => segments.push(segment),
        }
    }
    let mut path = String::with_capacity(raw.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        path.push('/');
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Paths built from the pieces attacks are made of.
    fn hostile_path() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "/", "//", ".", "..", "%2e", "%2E", "%2f", "%5c", "%25", "%00", "%c0%ae", ";", "a",
            "premium", "%70", "~", "%20", "\\", "%", "%e",
        ]);
        prop::collection::vec(piece, 0..12).prop_map(|pieces| format!("/{}", pieces.concat()))
    }

    proptest! {
        #[test]
        fn a_canonical_path_is_its_own_canonical_form(raw in hostile_path()) {
            if let Ok(path) = normalize(&raw) {
                prop_assert!(path.starts_with('/'));
                prop_assert!(!path.contains("//"), "{path}");
                for segment in path.split('/') {
                    prop_assert!(segment != "." && segment != "..", "{path}");
                }
                for refused in ["%2F", "%5C", "%25", "%00", "\\"] {
                    prop_assert!(!path.to_ascii_uppercase().contains(refused), "{path}");
                }
                prop_assert_eq!(normalize(&path), Ok(path.clone()));
            }
        }

        #[test]
        fn any_text_is_normalised_or_refused_without_panicking(raw in any::<String>()) {
            let _ = normalize(&raw);
            let _ = normalize(&format!("/{raw}"));
        }

        #[test]
        fn any_bytes_percent_encoded_are_normalised_to_a_fixed_point_or_refused(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            slashes in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut raw: String = bytes.iter().map(|b| format!("%{b:02x}")).collect();
            for slash in &slashes {
                let at = slash.index(raw.len() + 1) / 3 * 3;
                raw.insert(at.min(raw.len()), '/');
            }
            if let Ok(path) = normalize(&format!("/{raw}")) {
                prop_assert_eq!(normalize(&path), Ok(path.clone()));
                prop_assert!(!path.split('/').any(|segment| segment == ".."), "{path}");
            }
        }
    }

    #[test]
    fn plain_paths_are_kept() {
        for path in [
            "/",
            "/premium",
            "/premium/",
            "/premium/quote",
            "/a/b.json",
            "/a/...b",
        ] {
            assert_eq!(normalize(path).as_deref(), Ok(path), "{path}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_dot_segments_resolved() {
        let cases = [
            ("/premium/%2e%2e/hits", "/hits"),
            ("/premium/%2E%2E/hits", "/hits"),
            ("/premium/.%2e/hits", "/hits"),
            ("/premium/%2e./hits", "/hits"),
            ("/premium/./quote", "/premium/quote"),
            ("/premium/a/../quote", "/premium/quote"),
            ("/premium//../hits", "/hits"),
            ("/premium//quote", "/premium/quote"),
            ("/premium/quote/..", "/premium/"),
            ("/premium/quote/.", "/premium/quote/"),
            ("/%70remium/%7Equote", "/premium/~quote"),
            ("/premium/caf%c3%a9", "/premium/caf%C3%A9"),
            ("/premium/a%20b", "/premium/a%20b"),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize(raw).as_deref(), Ok(expected), "{raw}");
        }
    }

    #[test]
    fn what_servers_read_differently_is_refused() {
        let cases = [
            ("/premium/..%2fhits", PathError::EncodedSlash),
            ("/premium/..%2Fhits", PathError::EncodedSlash),
            ("/premium/%2e%2e%5chits", PathError::Backslash),
            ("/premium/..\\hits", PathError::Backslash),
            ("/premium/%252e%252e/hits", PathError::EncodedPercent),
            ("/premium/%00", PathError::ControlByte),
            ("/premium/%0a", PathError::ControlByte),
            ("/premium/%7f", PathError::ControlByte),
            ("/premium/%zz", PathError::MalformedEscape),
            ("/premium/%2", PathError::MalformedEscape),
            ("/premium/%c0%ae%c0%ae/hits", PathError::NotUtf8),
            ("/premium/..;x/hits", PathError::AmbiguousDotSegment),
            ("/premium/.%3B/hits", PathError::AmbiguousDotSegment),
            ("/../premium", PathError::AboveRoot),
            ("/premium/../../x", PathError::AboveRoot),
            ("/premium/caf\u{e9}", PathError::NotAscii),
            ("premium", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
        ];
        for (raw, error) in cases {
            assert_eq!(normalize(raw), Err(error), "{raw}");
        }
    }
}
