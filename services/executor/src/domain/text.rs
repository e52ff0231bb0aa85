//! Literals as text and back, the way Flyte renders them for raw containers: Propeller's
//! `{{.inputs.x}}` substitution and CoPilot's one-file-per-input, which follow Go's formatting
//! (`strconv`, `time.Duration.String`, RFC 3339 timestamps).

use aloft_proto::flyteidl::core::{Literal, Primitive, Scalar, literal, primitive, scalar};

use super::SpecError;

/// A literal holding one scalar value.
pub fn scalar_literal(value: scalar::Value) -> Literal {
    Literal { value: Some(literal::Value::Scalar(Box::new(Scalar { value: Some(value) }))), ..Default::default() }
}

/// A literal as Propeller substitutes it for `{{.inputs.<var>}}`: primitives as text, blobs and
/// schemas as their uri, collections as `[a,b]`.
pub fn literal_text(value: &Literal) -> Result<String, SpecError> {
    match &value.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Primitive(p)) => primitive_text(p),
            Some(scalar::Value::Blob(b)) => Ok(b.uri.clone()),
            Some(scalar::Value::Schema(s)) => Ok(s.uri.clone()),
            other => Err(SpecError::new(format!("a {} cannot be rendered as text", scalar_kind(other.as_ref())))),
        },
        Some(literal::Value::Collection(c)) => {
            let items: Result<Vec<String>, SpecError> = c.literals.iter().map(literal_text).collect();
            Ok(format!("[{}]", items?.join(",")))
        }
        Some(literal::Value::Map(_)) => Err(SpecError::new("a map cannot be rendered as text")),
        Some(literal::Value::OffloadedMetadata(_)) => {
            Err(SpecError::new("an offloaded literal cannot be rendered as text"))
        }
        None => Err(SpecError::new("an empty literal cannot be rendered as text")),
    }
}

/// A primitive's text: `42`, `3.5`, `true`, the string itself, an RFC 3339 UTC timestamp, a Go
/// duration (`1m30s`).
pub fn primitive_text(p: &Primitive) -> Result<String, SpecError> {
    match &p.value {
        Some(primitive::Value::Integer(i)) => Ok(i.to_string()),
        Some(primitive::Value::FloatValue(f)) => Ok(format_float(*f)),
        Some(primitive::Value::StringValue(s)) => Ok(s.clone()),
        Some(primitive::Value::Boolean(b)) => Ok(b.to_string()),
        Some(primitive::Value::Datetime(t)) => Ok(format_timestamp(t)),
        Some(primitive::Value::Duration(d)) => Ok(format_duration(d)),
        None => Err(SpecError::new("an empty primitive cannot be rendered as text")),
    }
}

pub(crate) fn scalar_kind(value: Option<&scalar::Value>) -> &'static str {
    match value {
        Some(scalar::Value::Primitive(_)) => "primitive",
        Some(scalar::Value::Blob(_)) => "blob",
        Some(scalar::Value::Binary(_)) => "binary",
        Some(scalar::Value::Schema(_)) => "schema",
        Some(scalar::Value::NoneType(_)) => "none value",
        Some(scalar::Value::Error(_)) => "error value",
        Some(scalar::Value::Generic(_)) => "generic struct",
        Some(scalar::Value::StructuredDataset(_)) => "structured dataset",
        Some(scalar::Value::Union(_)) => "union value",
        None => "empty scalar",
    }
}

/// A float as Go's `%v` prints it: shortest round-trip digits, exponent form below 1e-4 and
/// from 1e21 (`1e+21`, `1e-05`).
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        let text = format!("{f:e}");
        let (mantissa, exponent) = text.split_once('e').expect("{:e} has an exponent");
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    format!("{f}")
}

/// RFC 3339 in UTC with as many fractional digits as needed (Go's `TimestampString`):
/// `2024-01-02T03:04:05Z`, `2024-01-02T03:04:05.5Z`.
pub fn format_timestamp(t: &prost_types::Timestamp) -> String {
    let nanos = t.nanos.clamp(0, 999_999_999);
    let days = t.seconds.div_euclid(86_400);
    let secs = t.seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses RFC 3339 (`2024-01-02T03:04:05Z`, `...05.25+02:00`), as Go's `time.RFC3339` does.
pub fn parse_timestamp(text: &str) -> Result<prost_types::Timestamp, String> {
    let bad = || format!("`{text}` is not an RFC 3339 timestamp");
    let s = text.trim();
    let b = s.as_bytes();
    if !s.is_ascii()
        || b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = &s[range];
        if part.bytes().all(|c| c.is_ascii_digit()) { part.parse().map_err(|_| bad()) } else { Err(bad()) }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let mut rest = &s[19..];
    let mut nanos = 0i64;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let fraction = &after_dot[..digits];
        let padded = format!("{:0<9}", &fraction[..digits.min(9)]);
        nanos = padded.parse().map_err(|_| bad())?;
        rest = &after_dot[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return Err(bad());
            }
            let h: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let m: i64 = rest[4..6].parse().map_err(|_| bad())?;
            let sign = if rb[0] == b'-' { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Ok(prost_types::Timestamp { seconds, nanos: nanos as i32 })
}

/// A duration as Go's `time.Duration.String()`: `1h2m3.5s`, `1m0s`, `300ms`, `1.5µs`, `0s`.
pub fn format_duration(d: &prost_types::Duration) -> String {
    let total = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
    if total == 0 {
        return "0s".into();
    }
    let sign = if total < 0 { "-" } else { "" };
    let n = total.unsigned_abs();
    let fraction = |value: u128, unit: u128| -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let width = unit.ilog10() as usize;
        let digits = format!("{rest:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", fraction(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", fraction(n, 1_000_000));
    }
    let hours = n / 3_600_000_000_000;
    let minutes = n / 60_000_000_000 % 60;
    let seconds = fraction(n % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

/// Parses a Go duration (`1h30m`, `1.5s`, `300ms`, `2us`, `-1m`, `0`).
pub fn parse_duration(text: &str) -> Result<prost_types::Duration, String> {
    let bad = || format!("`{text}` is not a duration (like 1h30m, 1.5s, 300ms)");
    let s = text.trim();
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(prost_types::Duration::default());
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let number_len = rest.bytes().take_while(|c| c.is_ascii_digit() || *c == b'.').count();
        let (number, after) = rest.split_at(number_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') || whole.len() > 20 {
            return Err(bad());
        }
        let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        let mut part = whole.checked_mul(unit_nanos).ok_or_else(bad)?;
        let mut scale = unit_nanos;
        for digit in fraction.bytes().take(18) {
            scale /= 10;
            part += i128::from(digit - b'0') * scale;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = after;
    }
    if negative {
        total = -total;
    }
    let seconds = i64::try_from(total.div_euclid(1_000_000_000)).map_err(|_| bad())?;
    let mut nanos = total.rem_euclid(1_000_000_000) as i32;
    let mut seconds = seconds;
    // protobuf durations keep seconds and nanos with the same sign
    if seconds < 0 && nanos > 0 {
        seconds += 1;
        nanos -= 1_000_000_000;
    }
    Ok(prost_types::Duration { seconds, nanos })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use aloft_proto::flyteidl::core::{Blob, LiteralCollection, Void};

    use super::*;

    fn prim(v: primitive::Value) -> Literal {
        scalar_literal(scalar::Value::Primitive(Primitive { value: Some(v) }))
    }

    fn ts(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    fn dur(seconds: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos }
    }

    #[test]
    fn literals_render_like_propeller() {
        assert_eq!(literal_text(&prim(primitive::Value::Integer(-42))).unwrap(), "-42");
        assert_eq!(literal_text(&prim(primitive::Value::FloatValue(3.5))).unwrap(), "3.5");
        assert_eq!(literal_text(&prim(primitive::Value::FloatValue(2.0))).unwrap(), "2");
        assert_eq!(literal_text(&prim(primitive::Value::Boolean(true))).unwrap(), "true");
        assert_eq!(literal_text(&prim(primitive::Value::StringValue("a b".into()))).unwrap(), "a b");
        assert_eq!(
            literal_text(&prim(primitive::Value::Datetime(ts(1_700_000_000, 0)))).unwrap(),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(literal_text(&prim(primitive::Value::Duration(dur(90, 0)))).unwrap(), "1m30s");
        let blob = scalar_literal(scalar::Value::Blob(Blob { uri: "s3://b/k".into(), metadata: None }));
        assert_eq!(literal_text(&blob).unwrap(), "s3://b/k");
        let list = Literal {
            value: Some(literal::Value::Collection(LiteralCollection {
                literals: vec![prim(primitive::Value::Integer(1)), prim(primitive::Value::Integer(2))],
            })),
            ..Default::default()
        };
        assert_eq!(literal_text(&list).unwrap(), "[1,2]");
        let none = scalar_literal(scalar::Value::NoneType(Void {}));
        assert_eq!(literal_text(&none).unwrap_err().to_string(), "a none value cannot be rendered as text");
    }

    #[test]
    fn floats_follow_go() {
        assert_eq!(format_float(0.0), "0");
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(1e21), "1e+21");
        assert_eq!(format_float(1e-5), "1e-05");
        assert_eq!(format_float(-2.5e-7), "-2.5e-07");
        assert_eq!(format_float(123456.789), "123456.789");
    }

    #[test]
    fn timestamps_round_trip() {
        for (seconds, nanos, text) in [
            (0, 0, "1970-01-01T00:00:00Z"),
            (1_700_000_000, 500_000_000, "2023-11-14T22:13:20.5Z"),
            (951_782_400, 123, "2000-02-29T00:00:00.000000123Z"),
            (-86_400, 0, "1969-12-31T00:00:00Z"),
        ] {
            assert_eq!(format_timestamp(&ts(seconds, nanos)), text);
            assert_eq!(parse_timestamp(text).unwrap(), ts(seconds, nanos), "{text}");
        }
        assert_eq!(parse_timestamp("2023-11-15T00:13:20+02:00").unwrap(), ts(1_700_000_000, 0));
        assert_eq!(parse_timestamp(" 2023-11-14t22:13:20.5z\n").unwrap(), ts(1_700_000_000, 500_000_000));
        for bad in ["2023-11-14", "2023-13-01T00:00:00Z", "2023-02-30T00:00:00Z", "2023-11-14T22:13:20", "x"] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_follow_go() {
        for (seconds, nanos, text) in [
            (0, 0, "0s"),
            (0, 1, "1ns"),
            (0, 1_500, "1.5µs"),
            (0, 300_000_000, "300ms"),
            (1, 500_000_000, "1.5s"),
            (60, 0, "1m0s"),
            (3723, 500_000_000, "1h2m3.5s"),
            (-90, 0, "-1m30s"),
        ] {
            assert_eq!(format_duration(&dur(seconds, nanos)), text);
            assert_eq!(parse_duration(text).unwrap(), dur(seconds, nanos), "{text}");
        }
        assert_eq!(parse_duration("1h30m").unwrap(), dur(5400, 0));
        assert_eq!(parse_duration("2us").unwrap(), dur(0, 2000));
        assert_eq!(parse_duration("0").unwrap(), dur(0, 0));
        assert_eq!(parse_duration("-1.5s").unwrap(), dur(-1, -500_000_000));
        for bad in ["", "5", "1x", "s", "1.2.3s", "-"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
