//! Output helpers: JSON, aligned tables, human sizes and durations, progress bars on stderr.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::CliError;

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::new(format!("could not encode JSON: {e}")))?;
    println!("{s}");
    Ok(())
}

/// Render a table with a header row, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            } else {
                widths.push(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    out.push_str(&line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Print a table on stdout.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    println!("{}", table(header, rows));
}

/// A byte count for people: `812 B`, `14.2 KB`, `1.31 MB` (powers of 1000).
pub fn bytes(n: u64) -> String {
    if n < 1000 {
        format!("{n} B")
    } else if n < 1_000_000 {
        format!("{:.1} KB", n as f64 / 1000.0)
    } else {
        format!("{:.2} MB", n as f64 / 1_000_000.0)
    }
}

/// A duration for people: `840 µs`, `12.3 ms`, `4.52 s`.
pub fn duration(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// Milliseconds since the epoch as a UTC date-time.
pub fn ms_to_utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A progress bar on stderr (hidden when stderr is not a terminal, or when `quiet`).
pub fn bar(len: u64, msg: &str, quiet: bool) -> ProgressBar {
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len)
    };
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg:<28} [{bar:30}] {pos}/{len} {elapsed_precise}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg.to_string());
    pb
}

/// A spinner on stderr for work of unknown length.
pub fn spinner(msg: &str, quiet: bool) -> ProgressBar {
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        pb.set_style(style);
    }
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_sizes_read_well() {
        let t = table(&["a", "long header"], &[vec!["value".into(), "x".into()]]);
        assert_eq!(t, "a      long header\n-----  -----------\nvalue  x");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(14_200), "14.2 KB");
        assert_eq!(duration(Duration::from_micros(12_300)), "12.3 ms");
    }
}
