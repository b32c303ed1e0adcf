//! How commands print: `--json` output is pretty-printed JSON on stdout; otherwise lines for a
//! person.

/// Prints `value` as pretty JSON on its own line.
pub(crate) fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Prints `value` as JSON when `--json` was given, else `lines`, one a line.
pub(crate) fn print_json_or_lines(json: bool, value: &serde_json::Value, lines: &[String]) {
    if json {
        print_json(value);
    } else {
        for line in lines {
            println!("{line}");
        }
    }
}
