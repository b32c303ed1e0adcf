//! Percentiles of timing samples and the tables they are printed in.

use std::time::Duration;

/// Order statistics of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// 50th percentile.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile (nearest rank: with fewer than 100 samples, the largest).
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The nearest-rank percentile `p` (0–100) of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil().max(1.0);
    // `rank` is between 1 and len, so the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let index = (rank as usize).min(sorted.len()) - 1;
    sorted[index]
}

impl Summary {
    /// Summarizes durations.
    pub fn of(samples: &[Duration]) -> Summary {
        Summary::of_millis(samples.iter().copied().map(millis).collect())
    }

    /// Summarizes values already in milliseconds.
    pub fn of_millis(mut values: Vec<f64>) -> Summary {
        values.sort_by(f64::total_cmp);
        let count = values.len();
        let mean = if count == 0 {
            0.0
        } else {
            values.iter().sum::<f64>() / count as f64
        };
        Summary {
            count,
            median: percentile(&values, 50.0),
            p90: percentile(&values, 90.0),
            p99: percentile(&values, 99.0),
            max: values.last().copied().unwrap_or_default(),
            mean,
        }
    }
}

/// Prints rows as an aligned Markdown table; the first row is the header.
pub fn print_table(rows: &[Vec<String>]) {
    let Some(header) = rows.first() else { return };
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |row: &Vec<String>| {
        let cells: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(column, width)| {
                let cell = row.get(column).map_or("", String::as_str);
                format!("{cell:<width$}")
            })
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    println!("{}", line(header));
    let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for row in &rows[1..] {
        println!("{}", line(row));
    }
}

/// A millisecond value with two decimals.
pub fn ms(value: f64) -> String {
    format!("{value:.2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let summary = Summary::of_millis(values);
        assert_eq!(summary.count, 100);
        assert_eq!(summary.median, 50.0);
        assert_eq!(summary.p90, 90.0);
        assert_eq!(summary.p99, 99.0);
        assert_eq!(summary.max, 100.0);
        assert!((summary.mean - 50.5).abs() < 1e-9);
        let few = Summary::of_millis(vec![3.0, 1.0, 2.0]);
        assert_eq!((few.median, few.p99), (2.0, 3.0));
        assert_eq!(Summary::of_millis(Vec::new()).count, 0);
    }
}
