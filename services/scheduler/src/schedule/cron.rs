//! Five-field cron expressions (`minute hour day-of-month month day-of-week`), evaluated in UTC.
//!
//! The semantics are Vixie cron's (`man 5 crontab`), which is what "standard cron" means to
//! Flyte's users: lists, ranges, steps (`*/15`, `1-30/2`, `5/10` = from 5 to the end), month
//! and weekday names (`JAN`, `mon-fri`, any case), 0 or 7 for Sunday, `?` as `*` in the two day
//! fields, and the aliases `@yearly @annually @monthly @weekly @daily @midnight @hourly` (also
//! without the `@`, as flytekit's `CronSchedule` accepts them). When both day fields are
//! restricted (neither starts with `*` or `?`) a day matches if EITHER does; otherwise both must.
//!
//! Written here rather than taken from a crate so the day rule, the accepted syntax and the error
//! messages (naming the field) are exactly ours, and `next_after` is pure over Unix seconds.

use super::calendar::{DAY, civil_from_days, days_from_civil, days_in_month, weekday};

/// A parsed cron expression. Each field is a bit set of the values it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// The day-of-month field starts with `*` (or `?`): the day fields combine with AND.
    days_star: bool,
    /// The day-of-week field starts with `*` (or `?`).
    weekdays_star: bool,
}

/// Why a cron expression was refused; the message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cron `{expr}`: {message}")]
pub struct CronError {
    /// The expression as given.
    pub expr: String,
    /// What is wrong, naming the field.
    pub message: String,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for values, the first one standing for `min`.
    names: &'static [&'static str],
    /// `?` is accepted (the day fields).
    question: bool,
}

const MINUTE: Field = Field { name: "minute", min: 0, max: 59, names: &[], question: false };
const HOUR: Field = Field { name: "hour", min: 0, max: 23, names: &[], question: false };
const DAY_OF_MONTH: Field = Field { name: "day-of-month", min: 1, max: 31, names: &[], question: true };
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    question: false,
};
// 7 is Sunday too; it is folded onto 0 after parsing.
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    question: true,
};

/// Bound of the search for the next time. Every (month, day) pair recurs within 8 years (the 29th
/// of February) and every date falls on every weekday within the 28-year calendar cycle; 30
/// years covers both, so `None` means "never".
const SEARCH_DAYS: i64 = 366 * 30;

impl Cron {
    /// Parses an expression or alias.
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let err = |message: String| CronError { expr: expr.to_string(), message };
        let text = expr.trim();
        let expanded = match text.trim_start_matches('@').to_ascii_lowercase().as_str() {
            "yearly" | "annually" => Some("0 0 1 1 *"),
            "monthly" => Some("0 0 1 * *"),
            "weekly" => Some("0 0 * * 0"),
            "daily" | "midnight" => Some("0 0 * * *"),
            "hourly" => Some("0 * * * *"),
            _ if text.starts_with('@') => {
                return Err(err(
                    "unknown alias; expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
                        .into(),
                ));
            }
            _ => None,
        };
        let fields: Vec<&str> = expanded.unwrap_or(text).split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or an @alias, found {}",
                fields.len()
            )));
        }
        let parse =
            |text: &str, field: &Field| parse_field(text, field).map_err(|m| err(format!("{}: {m}", field.name)));
        let minutes = parse(fields[0], &MINUTE)?;
        let hours = parse(fields[1], &HOUR)?;
        let days = parse(fields[2], &DAY_OF_MONTH)?;
        let months = parse(fields[3], &MONTH)?;
        let mut weekdays = parse(fields[4], &DAY_OF_WEEK)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let starred = |f: &str| f.starts_with('*') || f.starts_with('?');
        let cron = Cron {
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_star: starred(fields[2]),
            weekdays_star: starred(fields[4]),
        };
        // With AND (a starred day field) the day-of-month must exist in one of the months; `30 2`
        // or `31 4,6` would be accepted and silently never fire.
        if cron.days_star || cron.weekdays_star {
            let possible = (1..=12u32)
                .filter(|m| cron.months & (1 << m) != 0)
                .any(|m| (1..=days_in_month(2000, m)).any(|d| cron.days & (1 << d) != 0));
            if !possible {
                return Err(err(
                    "day-of-month: no listed day exists in the listed months, so it would never fire".into()
                ));
            }
        }
        Ok(cron)
    }

    fn day_matches(&self, days: i64) -> bool {
        let (_, _, d) = civil_from_days(days);
        let by_date = self.days & (1 << d) != 0;
        let by_weekday = self.weekdays & (1 << weekday(days)) != 0;
        if self.days_star || self.weekdays_star { by_date && by_weekday } else { by_date || by_weekday }
    }

    /// The first time strictly after `t` (Unix seconds, UTC) that matches, always at second 0 of
    /// a minute; `None` if there is none within the next 30 years.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        let mut t = (t.div_euclid(60) + 1) * 60;
        let last_day = t.div_euclid(DAY) + SEARCH_DAYS;
        loop {
            let day = t.div_euclid(DAY);
            if day > last_day {
                return None;
            }
            let (year, month, _) = civil_from_days(day);
            if self.months & (1 << month) == 0 {
                let (y, m) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                t = days_from_civil(y, m, 1) * DAY;
                continue;
            }
            if self.day_matches(day) {
                let second_of_day = t - day * DAY;
                let (hour, minute) = ((second_of_day / 3600) as u32, (second_of_day % 3600 / 60) as u32);
                for h in hour..24 {
                    if self.hours & (1 << h) == 0 {
                        continue;
                    }
                    let from = if h == hour { minute } else { 0 };
                    if let Some(m) = (from..60).find(|m| self.minutes & (1 << m) != 0) {
                        return Some(day * DAY + i64::from(h) * 3600 + i64::from(m) * 60);
                    }
                }
            }
            t = (day + 1) * DAY;
        }
    }
}

/// One field: a comma-separated list of `*`, `N`, `A-B`, each optionally followed by `/STEP`.
fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("empty item in list `{text}`"));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| format!("step `{step}` is not a number"))?;
                if step == 0 {
                    return Err("step must be at least 1".into());
                }
                (range, Some(step))
            }
            None => (item, None),
        };
        let (start, end) = if range == "*" || range == "?" {
            if range == "?" && !field.question {
                return Err("`?` is only allowed in the day-of-month and day-of-week fields".into());
            }
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a, field)?, value(b, field)?);
            if a > b {
                return Err(format!("range `{range}` goes backwards"));
            }
            (a, b)
        } else {
            let a = value(range, field)?;
            // `5/10` means from 5 to the end of the field in steps of 10.
            (a, if step.is_some() { field.max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = field.names.iter().position(|n| *n == lower) {
        return Ok(field.min + i as u32);
    }
    let v: u32 = text.parse().map_err(|_| {
        if field.names.is_empty() {
            format!("`{text}` is not a number")
        } else {
            format!("`{text}` is not a number or a name ({}..)", field.names[..3].join(", "))
        }
    })?;
    if v < field.min || v > field.max {
        return Err(format!("{v} is out of range {}-{}", field.min, field.max));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::calendar::format_utc;
    use proptest::prelude::*;

    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * DAY + h * 3600 + mi * 60
    }

    fn next(expr: &str, t: i64) -> String {
        format_utc(Cron::parse(expr).unwrap().next_after(t).unwrap())
    }

    #[test]
    fn steps_ranges_lists_and_names() {
        let t = at(2024, 2, 28, 23, 58); // a Wednesday
        assert_eq!(next("*/5 * * * *", t), "2024-02-29T00:00:00Z");
        assert_eq!(next("* * * * *", t), "2024-02-28T23:59:00Z");
        assert_eq!(next("30 9 * * mon-fri", t), "2024-02-29T09:30:00Z");
        assert_eq!(next("0 12 * * SAT,sun", t), "2024-03-02T12:00:00Z");
        assert_eq!(next("0 0 29 feb *", t), "2024-02-29T00:00:00Z");
        assert_eq!(next("0 0 29 2 *", at(2024, 3, 1, 0, 0)), "2028-02-29T00:00:00Z");
        assert_eq!(next("15/20 * * * *", at(2024, 1, 1, 10, 36)), "2024-01-01T10:55:00Z");
        assert_eq!(next("0 1-5/2 * * *", at(2024, 1, 1, 1, 0)), "2024-01-01T03:00:00Z");
        assert_eq!(next("0 0 * * 7", t), "2024-03-03T00:00:00Z");
        assert_eq!(next("0 0 1 */3 *", t), "2024-04-01T00:00:00Z");
        assert_eq!(next("0 0 31 * *", at(2024, 4, 1, 0, 0)), "2024-05-31T00:00:00Z");
    }

    #[test]
    fn next_is_strictly_after_and_on_the_minute() {
        let t = at(2024, 1, 1, 10, 0);
        assert_eq!(Cron::parse("0 10 * * *").unwrap().next_after(t), Some(at(2024, 1, 2, 10, 0)));
        assert_eq!(Cron::parse("* * * * *").unwrap().next_after(t + 59), Some(t + 60));
        assert_eq!(Cron::parse("* * * * *").unwrap().next_after(t - 1), Some(t));
    }

    #[test]
    fn restricted_day_fields_combine_with_or_starred_with_and() {
        let t = at(2024, 1, 1, 0, 0); // Monday
        // The 13th or any Friday: Friday the 5th comes first.
        assert_eq!(next("0 0 13 * 5", t), "2024-01-05T00:00:00Z");
        // `*/1` starts with `*`: only Fridays that are any day, i.e. Fridays.
        assert_eq!(next("0 0 */1 * 5", t), "2024-01-05T00:00:00Z");
        // Starred day-of-week: the 13th, whatever the weekday.
        assert_eq!(next("0 0 13 * *", t), "2024-01-13T00:00:00Z");
        assert_eq!(next("0 0 13 * ?", t), "2024-01-13T00:00:00Z");
        // Odd days (starred) AND Sundays: Sunday the 7th.
        assert_eq!(next("0 0 */2 * 0", t), "2024-01-07T00:00:00Z");
    }

    #[test]
    fn aliases() {
        let t = at(2024, 5, 15, 12, 30); // a Wednesday
        assert_eq!(next("@hourly", t), "2024-05-15T13:00:00Z");
        assert_eq!(next("@daily", t), "2024-05-16T00:00:00Z");
        assert_eq!(next("@midnight", t), "2024-05-16T00:00:00Z");
        assert_eq!(next("daily", t), "2024-05-16T00:00:00Z");
        assert_eq!(next("@weekly", t), "2024-05-19T00:00:00Z");
        assert_eq!(next("@monthly", t), "2024-06-01T00:00:00Z");
        assert_eq!(next("@yearly", t), "2025-01-01T00:00:00Z");
        assert_eq!(next("@annually", t), "2025-01-01T00:00:00Z");
    }

    #[test]
    fn errors_name_the_field() {
        let e = |expr: &str| Cron::parse(expr).unwrap_err().to_string();
        assert_eq!(e("61 * * * *"), "cron `61 * * * *`: minute: 61 is out of range 0-59");
        assert_eq!(e("* 24 * * *"), "cron `* 24 * * *`: hour: 24 is out of range 0-23");
        assert_eq!(e("* * 0 * *"), "cron `* * 0 * *`: day-of-month: 0 is out of range 1-31");
        assert_eq!(e("* * * foo *"), "cron `* * * foo *`: month: `foo` is not a number or a name (jan, feb, mar..)");
        assert_eq!(e("* * * * 8"), "cron `* * * * 8`: day-of-week: 8 is out of range 0-7");
        assert_eq!(e("*/0 * * * *"), "cron `*/0 * * * *`: minute: step must be at least 1");
        assert_eq!(e("5-1 * * * *"), "cron `5-1 * * * *`: minute: range `5-1` goes backwards");
        assert_eq!(e("1,,2 * * * *"), "cron `1,,2 * * * *`: minute: empty item in list `1,,2`");
        assert_eq!(
            e("? * * * *"),
            "cron `? * * * *`: minute: `?` is only allowed in the day-of-month and day-of-week fields"
        );
        assert_eq!(
            e("0 0 * * * *"),
            "cron `0 0 * * * *`: expected 5 fields (minute hour day-of-month month day-of-week) or an @alias, found 6"
        );
        assert_eq!(
            e("@every 5m"),
            "cron `@every 5m`: unknown alias; expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
        );
        assert_eq!(
            e("0 0 30 2 *"),
            "cron `0 0 30 2 *`: day-of-month: no listed day exists in the listed months, so it would never fire"
        );
        // With a restricted weekday the rule is OR, so the 30th of February is harmless.
        assert!(Cron::parse("0 0 30 2 1").is_ok());
    }

    /// A random field: `*`, a value, a range, a step or a list of those, within `min..=max`.
    fn field(min: u32, max: u32) -> impl Strategy<Value = String> {
        let item = prop_oneof![
            Just("*".to_string()),
            (min..=max).prop_map(|v| v.to_string()),
            (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (1..=max.max(1), prop::bool::ANY)
                .prop_map(move |(s, star)| { if star { format!("*/{s}") } else { format!("{min}/{s}") } }),
        ];
        prop::collection::vec(item, 1..=3).prop_map(|items| items.join(","))
    }

    /// The definition, checked minute by minute.
    fn matches(c: &Cron, t: i64) -> bool {
        let day = t.div_euclid(DAY);
        let (_, month, _) = civil_from_days(day);
        let s = t - day * DAY;
        c.minutes & (1 << (s % 3600 / 60)) != 0
            && c.hours & (1 << (s / 3600)) != 0
            && c.months & (1 << month) != 0
            && c.day_matches(day)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn next_after_agrees_with_a_minute_by_minute_search(
            minute in field(0, 59),
            hour in field(0, 23),
            dom in field(1, 31),
            month in prop_oneof![Just("*".to_string()), field(1, 12)],
            dow in field(0, 7),
            start in 1_600_000_000i64..1_900_000_000,
        ) {
            let expr = format!("{minute} {hour} {dom} {month} {dow}");
            let Ok(cron) = Cron::parse(&expr) else { return Ok(()) };
            // Brute force over 40 days; beyond that only check the answer is a match.
            let horizon = start + 40 * DAY;
            let mut t = (start.div_euclid(60) + 1) * 60;
            while t <= horizon && !matches(&cron, t) {
                t += 60;
            }
            let got = cron.next_after(start);
            if t <= horizon {
                prop_assert_eq!(got, Some(t), "{}", expr);
            } else if let Some(g) = got {
                prop_assert!(g > horizon && matches(&cron, g), "{} gave {}", expr, g);
            }
        }
    }
}
