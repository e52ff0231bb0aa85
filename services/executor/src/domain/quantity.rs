//! Kubernetes resource quantities as Flyte writes them in `Resources` (`"500m"`, `"2"`, `"1.5"`,
//! `"1Gi"`, `"512Mi"`, `"1G"`, `"129e6"`), parsed exactly (no floating point) and rounded up, as
//! Kubernetes does.

use super::SpecError;

/// Parses a quantity into thousandths of its unit, rounded up: `"500m"` → 500, `"2"` → 2000,
/// `"1Ki"` → 1_024_000. Negative values are refused (a resource request cannot be negative).
pub fn parse_milli(text: &str) -> Result<u128, SpecError> {
    let bad = |why: &str| SpecError::new(format!("`{text}` is not a resource quantity: {why}"));
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(bad("it is negative"));
    }
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(bad("no digits"));
    }
    if fraction.contains('.') {
        return Err(bad("more than one decimal point"));
    }
    // value = mantissa / 10^fraction_digits * numerator / denominator
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(bad("too many digits"));
    }
    let mantissa: u128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| bad("bad digits"))? };
    let (numerator, denominator) = multiplier(suffix).ok_or_else(|| bad("unknown suffix"))?;
    let scale = pow10(fraction.len() as u32).ok_or_else(|| bad("too many decimals"))?;
    let top = mantissa.checked_mul(numerator).and_then(|v| v.checked_mul(1000)).ok_or_else(|| bad("too large"))?;
    let bottom = scale.checked_mul(denominator).ok_or_else(|| bad("too many decimals"))?;
    Ok(top.div_ceil(bottom))
}

/// CPU in millicores: `"500m"` → 500, `"2"` → 2000, `"0.25"` → 250.
pub fn cpu_millis(text: &str) -> Result<u64, SpecError> {
    let milli = parse_milli(text)?;
    u64::try_from(milli).map_err(|_| SpecError::new(format!("cpu quantity `{text}` is too large")))
}

/// Memory in bytes, rounded up: `"1Gi"` → 1_073_741_824, `"512Mi"`, `"1G"` → 1_000_000_000.
pub fn memory_bytes(text: &str) -> Result<u64, SpecError> {
    let bytes = parse_milli(text)?.div_ceil(1000);
    u64::try_from(bytes).map_err(|_| SpecError::new(format!("memory quantity `{text}` is too large")))
}

/// Renders millicores the way Kubernetes would: `"500m"`, `"2"`.
pub fn format_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) { format!("{}", millis / 1000) } else { format!("{millis}m") }
}

/// Renders bytes with the largest binary suffix that divides them exactly: `"1Gi"`, `"1536Mi"`.
pub fn format_memory(bytes: u64) -> String {
    for (suffix, shift) in [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        let unit = 1u64 << shift;
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// `(numerator, denominator)` of a suffix: binary (`Ki`..`Ei`), decimal SI (`n`..`E`) or a
/// decimal exponent (`e3`, `E-2`).
fn multiplier(suffix: &str) -> Option<(u128, u128)> {
    let binary = |power: u32| Some((1u128 << (10 * power), 1));
    match suffix {
        "" => Some((1, 1)),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "n" => Some((1, pow10(9)?)),
        "u" => Some((1, pow10(6)?)),
        "m" => Some((1, pow10(3)?)),
        "k" => Some((pow10(3)?, 1)),
        "M" => Some((pow10(6)?, 1)),
        "G" => Some((pow10(9)?, 1)),
        "T" => Some((pow10(12)?, 1)),
        "P" => Some((pow10(15)?, 1)),
        "E" => Some((pow10(18)?, 1)),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let exponent: i32 = exponent.parse().ok()?;
            if exponent >= 0 {
                Some((pow10(u32::try_from(exponent).ok()?)?, 1))
            } else {
                Some((1, pow10(exponent.unsigned_abs())?))
            }
        }
    }
}

fn pow10(power: u32) -> Option<u128> {
    10u128.checked_pow(power)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_forms() {
        assert_eq!(cpu_millis("500m").unwrap(), 500);
        assert_eq!(cpu_millis("2").unwrap(), 2000);
        assert_eq!(cpu_millis("0.5").unwrap(), 500);
        assert_eq!(cpu_millis(".25").unwrap(), 250);
        assert_eq!(cpu_millis("1.5").unwrap(), 1500);
        assert_eq!(cpu_millis("+3").unwrap(), 3000);
        assert_eq!(cpu_millis(" 4 ").unwrap(), 4000);
        // below a millicore rounds up, as Kubernetes does
        assert_eq!(cpu_millis("100u").unwrap(), 1);
        assert_eq!(cpu_millis("0.0001").unwrap(), 1);
        assert_eq!(cpu_millis("0").unwrap(), 0);
        assert_eq!(cpu_millis("1e3").unwrap(), 1_000_000);
    }

    #[test]
    fn memory_forms() {
        assert_eq!(memory_bytes("1Gi").unwrap(), 1 << 30);
        assert_eq!(memory_bytes("512Mi").unwrap(), 512 << 20);
        assert_eq!(memory_bytes("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(memory_bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(memory_bytes("128974848").unwrap(), 128_974_848);
        assert_eq!(memory_bytes("129e6").unwrap(), 129_000_000);
        assert_eq!(memory_bytes("129M").unwrap(), 129_000_000);
        assert_eq!(memory_bytes("1k").unwrap(), 1000);
        assert_eq!(memory_bytes("1Ki").unwrap(), 1024);
        assert_eq!(memory_bytes("1500m").unwrap(), 2, "fractions of a byte round up");
        assert_eq!(memory_bytes("8Ei").unwrap(), 8 << 60);
    }

    #[test]
    fn bad_quantities_name_the_text() {
        for bad in [
            "",
            "abc",
            "1x",
            "-1",
            "1..2",
            "1.2.3",
            "Gi",
            "1GiB",
            "1e",
            "1e-x",
            ".",
            "99999999999999999999999999999999Ei",
        ] {
            let err = parse_milli(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("`{}`", bad.trim())), "{bad}: {err}");
        }
        assert!(memory_bytes("64Ei").unwrap_err().to_string().contains("too large"));
    }

    #[test]
    fn formats_round_trip() {
        for cpu in [0, 1, 500, 1000, 2500, 16000] {
            assert_eq!(cpu_millis(&format_cpu(cpu)).unwrap(), cpu);
        }
        for mem in [0, 1, 1000, 1024, 1536 << 20, 1 << 30, 3 << 40] {
            assert_eq!(memory_bytes(&format_memory(mem)).unwrap(), mem);
        }
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_cpu(250), "250m");
        assert_eq!(format_memory(1 << 30), "1Gi");
        assert_eq!(format_memory(1536 << 20), "1536Mi");
    }
}
