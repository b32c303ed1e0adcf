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

/// Lays out `rows` under `headers` in columns as wide as their widest cell, two spaces apart;
/// the last column is not padded.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out
    };
    std::iter::once(line(headers.to_vec()))
        .chain(
            rows.iter()
                .map(|row| line(row.iter().map(String::as_str).collect())),
        )
        .collect()
}

/// Prints [`table`].
pub(crate) fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    for line in table(headers, rows) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn a_table_aligns_every_column_to_its_widest_cell() {
        let rows = vec![
            vec![
                "mer_1".to_owned(),
                "https://a.example/hooks".to_owned(),
                "Tea".to_owned(),
            ],
            vec![
                "mer_22".to_owned(),
                "-".to_owned(),
                "Café Ünïcode".to_owned(),
            ],
        ];
        assert_eq!(
            table(&["ID", "WEBHOOK", "NAME"], &rows),
            [
                "ID      WEBHOOK                  NAME",
                "mer_1   https://a.example/hooks  Tea",
                "mer_22  -                        Café Ünïcode",
            ]
        );
    }
}
