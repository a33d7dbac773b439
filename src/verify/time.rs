//! RFC 3339 timestamps and durations as verdicts and errors print them.
//!
//! Parsing follows the Python client exactly, so that a Rust and a Python
//! consumer agree on every manifest timestamp: `T`, `t` or a space between
//! date and time, an optional fraction of 1 to 9 digits truncated to
//! microseconds, and a mandatory `Z`, `z` or `±HH:MM` offset. A timestamp
//! without an offset is rejected because its instant would be ambiguous.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: i64 = 86_400;

/// Parses an RFC 3339 date-time into an instant.
///
/// # Errors
///
/// A message naming the text when it is not an RFC 3339 date-time or names
/// a day that does not exist.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use hallmark::verify::parse_rfc3339;
///
/// let t = parse_rfc3339("1970-01-02T01:00:00.5+01:00")?;
/// assert_eq!(t, UNIX_EPOCH + Duration::from_millis(86_400_500));
/// assert!(parse_rfc3339("2026-01-01T00:00:00").is_err());
/// # Ok::<(), String>(())
/// ```
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let shape = || {
        format!(
            "{text:?} is not an RFC 3339 timestamp; expected for example \
             2026-01-01T00:00:00.000000Z"
        )
    };
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = bytes.get(range)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, b| n * 10 + i64::from(b - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if bytes.len() < 20
        || separators.iter().any(|&(i, c)| bytes[i] != c)
        || !matches!(bytes[10], b'T' | b't' | b' ')
    {
        return Err(shape());
    }
    let field = |range| digits(range).ok_or_else(shape);
    let (year, month, day) = (field(0..4)?, field(5..7)?, field(8..10)?);
    let (hour, minute, second) = (field(11..13)?, field(14..16)?, field(17..19)?);

    let mut rest = &text[19..];
    let mut micros = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=9).contains(&len) {
            return Err(shape());
        }
        let kept = &fraction[..len.min(6)];
        micros = kept.parse::<i64>().map_err(|_| shape())? * 10_i64.pow(6 - kept.len() as u32);
        rest = &fraction[len..];
    }
    let offset_seconds = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let tail = &rest.as_bytes()[1..];
            let hh = tail[..2].iter().all(u8::is_ascii_digit);
            let mm = tail[3..].iter().all(u8::is_ascii_digit);
            if !hh || !mm {
                return Err(shape());
            }
            let hours = i64::from(tail[0] - b'0') * 10 + i64::from(tail[1] - b'0');
            let minutes = i64::from(tail[3] - b'0') * 10 + i64::from(tail[4] - b'0');
            if hours > 23 || minutes > 59 {
                return Err(format!(
                    "{text:?} is not a valid RFC 3339 timestamp: the offset is out of range"
                ));
            }
            let value = hours * 3_600 + minutes * 60;
            if *sign == b'+' { value } else { -value }
        }
        _ => return Err(shape()),
    };

    let invalid = |what: &str| format!("{text:?} is not a valid RFC 3339 timestamp: {what}");
    if !(1..=9999).contains(&year) {
        return Err(invalid("the year must be from 0001 to 9999"));
    }
    if !(1..=12).contains(&month) {
        return Err(invalid("the month must be from 01 to 12"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(invalid("the day does not exist in that month"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(invalid("the time of day is out of range"));
    }
    let seconds =
        days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3_600 + minute * 60 + second
            - offset_seconds;
    Ok(from_unix_micros(seconds * 1_000_000 + micros))
}

/// Formats an instant as RFC 3339 in UTC with microseconds and a `Z`, the
/// form the Python client writes.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use hallmark::verify::format_rfc3339;
///
/// let t = UNIX_EPOCH + Duration::from_micros(1_780_000_000_123_456);
/// assert_eq!(format_rfc3339(t), "2026-05-28T20:26:40.123456Z");
/// ```
pub fn format_rfc3339(time: SystemTime) -> String {
    let micros = unix_micros(time);
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:06}Z",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

/// Formats a duration compactly for messages: `5m`, `1h30m`, `30s`, `250ms`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1_000) || millis == 0 {
        return format!("{millis}ms");
    }
    let mut seconds = duration.as_secs();
    let mut text = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            text.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    text
}

/// Microseconds since the Unix epoch, negative before it.
pub(crate) fn unix_micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

fn from_unix_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil` algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Converts days since 1970-01-01 to a date: the inverse of
/// [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(text: &str) -> Result<i64, String> {
        parse_rfc3339(text).map(unix_micros)
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(micros("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(micros("1970-01-01t00:00:00z"), Ok(0));
        assert_eq!(micros("1970-01-01 00:00:01Z"), Ok(1_000_000));
        assert_eq!(micros("1970-01-01T00:00:00.1Z"), Ok(100_000));
        // Digits beyond microseconds are truncated, not rounded.
        assert_eq!(micros("1970-01-01T00:00:00.123456789Z"), Ok(123_456));
        assert_eq!(micros("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(micros("1969-12-31T23:00:00-01:00"), Ok(0));
        assert_eq!(micros("1970-01-02T00:00:00+23:59"), Ok(60_000_000));
        assert_eq!(micros("1969-12-31T23:59:59.5Z"), Ok(-500_000));
        assert_eq!(micros("2000-02-29T00:00:00Z"), Ok(951_782_400_000_000));
        assert_eq!(micros("2026-12-04T22:24:37Z"), Ok(1_796_423_077_000_000));
    }

    #[test]
    fn rejected_forms() {
        let cases = [
            ("2026-12-04T22:24:37", "not an RFC 3339 timestamp"),
            ("2026-12-04", "not an RFC 3339 timestamp"),
            ("2026-12-04T22:24:37.Z", "not an RFC 3339 timestamp"),
            (
                "2026-12-04T22:24:37.1234567890Z",
                "not an RFC 3339 timestamp",
            ),
            ("2026-12-04T22:24:37+0100", "not an RFC 3339 timestamp"),
            ("2026-12-04X22:24:37Z", "not an RFC 3339 timestamp"),
            ("2026-12-04T22:24:37Z ", "not an RFC 3339 timestamp"),
            ("+026-12-04T22:24:37Z", "not an RFC 3339 timestamp"),
            ("2026-13-04T22:24:37Z", "the month must be from 01 to 12"),
            (
                "2025-02-29T22:24:37Z",
                "the day does not exist in that month",
            ),
            ("2026-12-04T24:00:00Z", "the time of day is out of range"),
            ("2026-12-04T23:59:60Z", "the time of day is out of range"),
            ("0000-12-04T23:59:59Z", "the year must be from 0001 to 9999"),
            ("2026-12-04T23:59:59+24:00", "the offset is out of range"),
            ("2026-12-04T23:59:59-00:60", "the offset is out of range"),
            ("٢٠٢٦-12-04T23:59:59Z", "not an RFC 3339 timestamp"),
        ];
        for (text, expected) in cases {
            let error = parse_rfc3339(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for text in [
            "1970-01-01T00:00:00.000000Z",
            "1969-12-31T23:59:59.500000Z",
            "2000-02-29T12:34:56.789012Z",
            "2026-12-04T22:24:37.000001Z",
            "9999-12-31T23:59:59.999999Z",
            "0001-01-01T00:00:00.000000Z",
        ] {
            let parsed = parse_rfc3339(text).expect(text);
            assert_eq!(format_rfc3339(parsed), text);
        }
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(5_430)), "1h30m30s");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
    }
}
