//! Event time: RFC 3339 event timestamps to milliseconds since the Unix epoch (a fast path for
//! the fixed-width UTC form the ledger writes), durations such as `5m`, and the time of day in
//! a fixed UTC offset for allowed-hours rules. Detection never reads the wall clock.

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp, `None` when it is not one.
pub fn parse_event_time(s: &str) -> Option<i64> {
    fast_utc(s.as_bytes()).or_else(|| {
        let t = mcptrail_event::parse_rfc3339(s).ok()?;
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fff…]Z`, the form every tap writes.
fn fast_utc(b: &[u8]) -> Option<i64> {
    if b.len() < 20 || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut n = 0i64;
        for &c in b.get(r)? {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(c - b'0');
        }
        Some(n)
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut ms = 0i64;
    match b[19] {
        b'Z' if b.len() == 20 => {}
        b'.' => {
            let frac = &b[20..b.len() - 1];
            if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
                return None;
            }
            for (i, &c) in frac.iter().take(3).enumerate() {
                ms += i64::from(c - b'0') * [100, 10, 1][i];
            }
        }
        _ => return None,
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration written `500ms`, `30s`, `5m`, `2h` or `7d`, in milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit: write e.g. 30s, 5m, 2h or 7d"))?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}` does not start with a whole number: write e.g. 5m"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{s}`: use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(scale)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| format!("`{s}` must be greater than zero"))
}

/// Format milliseconds the way [`parse_duration`] reads them (largest exact unit).
pub fn format_duration(ms: i64) -> String {
    for (unit, scale) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms % scale == 0 {
            return format!("{}{unit}", ms / scale);
        }
    }
    format!("{ms}ms")
}

/// Minute of the day (0..1440) and weekday (0 = Monday) at `ms` in a UTC offset of
/// `offset_min` minutes.
pub fn local_minute_and_weekday(ms: i64, offset_min: i32) -> (u32, u32) {
    let local = ms + i64::from(offset_min) * 60_000;
    let days = local.div_euclid(86_400_000);
    let minute = local.rem_euclid(86_400_000) / 60_000;
    // 1970-01-01 was a Thursday (3 when Monday is 0).
    let weekday = (days + 3).rem_euclid(7);
    (minute as u32, weekday as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_agrees_with_the_time_crate() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2026-11-25T06:30:25.123456789Z",
            "2000-02-29T23:59:59.999Z",
            "2100-03-01T00:00:00.5Z",
            "1969-12-31T23:59:59Z",
        ] {
            let t = mcptrail_event::parse_rfc3339(s).unwrap();
            let want = (t.unix_timestamp_nanos() / 1_000_000) as i64;
            let want = if t.unix_timestamp_nanos() < 0 && t.unix_timestamp_nanos() % 1_000_000 != 0
            {
                want - 1
            } else {
                want
            };
            assert_eq!(fast_utc(s.as_bytes()), Some(want), "{s}");
        }
        assert_eq!(
            parse_event_time("2026-11-25T07:30:25+01:00"),
            parse_event_time("2026-11-25T06:30:25Z")
        );
        assert_eq!(parse_event_time("yesterday"), None);
        assert_eq!(fast_utc(b"2026-13-25T06:30:25Z"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400_000));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0s")
            .unwrap_err()
            .contains("greater than zero"));
        assert_eq!(format_duration(300_000), "5m");
        assert_eq!(format_duration(1500), "1500ms");
    }

    #[test]
    fn local_time() {
        // 2026-11-25 is a Wednesday; 06:30 UTC is 07:30 at +01:00.
        let ms = parse_event_time("2026-11-25T06:30:00Z").unwrap();
        assert_eq!(local_minute_and_weekday(ms, 60), (7 * 60 + 30, 2));
        // 23:30 UTC on Wednesday is 01:30 on Thursday at +02:00.
        let ms = parse_event_time("2026-11-25T23:30:00Z").unwrap();
        assert_eq!(local_minute_and_weekday(ms, 120), (90, 3));
    }
}
