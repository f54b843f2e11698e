//! Sizes and durations as people write them: read from settings and flags (`512MiB`, `2GB`,
//! `10m`, `1.5s`), and written in reports, pages and alert summaries (`1.5 GiB`, `2.5 min`,
//! `10m`). Reading refuses what it cannot read with a message naming the text; writing never
//! fails.

/// Bytes in the largest binary unit that keeps a whole part: `512 B`, `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Seconds in the largest unit under which they stay readable: `12.5 s`, `2.5 min`, `1.2 h`.
pub fn human_seconds(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// Milliseconds as a window is configured: the largest whole unit, `10m`, `1h`, `30s`, `250ms`
/// (so that [`parse_duration_ms`] reads back the same number).
pub fn compact_ms(ms: i64) -> String {
    match ms {
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

/// Reads a size such as `512MiB`, `2GiB`, `100MB`, `64k` or a plain byte count (decimal units
/// are powers of 1000, binary ones of 1024; the unit's case does not matter).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{text:?} is not a size like 512MiB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        other => return Err(format!("unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    let bytes = number * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is not a usable size"));
    }
    Ok(bytes as u64)
}

/// Reads a duration such as `10m`, `30s`, `1h`, `250ms`, `1d` or a number of milliseconds, into
/// milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration (try 10m, 30s, 500ms)"))?;
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        "d" => 86400e3,
        other => return Err(format!("unknown duration unit {other:?} in {text:?} (ms, s, m, h, d)")),
    };
    let ms = (value * scale).round();
    if !(ms.is_finite() && (0.0..9.0e15).contains(&ms)) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_are_written_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(512 << 20), "512.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn durations_are_written_in_the_unit_that_reads() {
        assert_eq!(human_seconds(12.54), "12.5 s");
        assert_eq!(human_seconds(150.0), "2.5 min");
        assert_eq!(human_seconds(4320.0), "1.2 h");
        assert_eq!(compact_ms(600_000), "10m");
        assert_eq!(compact_ms(7_200_000), "2h");
        assert_eq!(compact_ms(1_500), "1500ms");
    }

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes(" 2 GB "), Ok(2_000_000_000));
        assert_eq!(parse_bytes("64k"), Ok(64_000));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 parsecs").expect_err("no such unit").contains("unit"));
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1_500));
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert!(parse_duration_ms("ten minutes").is_err());
        assert!(parse_duration_ms("5 weeks").expect_err("no such unit").contains("unit"));
    }

    proptest! {
        #[test]
        fn reading_any_text_answers_without_panicking(text in "\\PC*") {
            let _ = parse_bytes(&text);
            let _ = parse_duration_ms(&text);
        }

        #[test]
        fn a_compact_duration_reads_back_as_itself(ms in 0i64..9_000_000_000_000) {
            prop_assert_eq!(parse_duration_ms(&compact_ms(ms)), Ok(ms));
        }
    }
}
