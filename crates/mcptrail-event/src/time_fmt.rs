//! RFC 3339 timestamps with nanoseconds, always UTC (`2026-11-25T06:30:25.123456789Z`).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, as RFC 3339 UTC with nine fractional digits.
pub fn now_rfc3339_nanos() -> String {
    format_rfc3339_nanos(OffsetDateTime::now_utc())
}

/// Format a time as RFC 3339 UTC with nine fractional digits (fixed width, so strings sort).
pub fn format_rfc3339_nanos(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// Parse any RFC 3339 timestamp.
pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_and_parseable() {
        let s = now_rfc3339_nanos();
        assert_eq!(s.len(), 30, "{s}");
        assert!(s.ends_with('Z'));
        let t = parse_rfc3339(&s).unwrap();
        assert_eq!(format_rfc3339_nanos(t), s);
    }
}
