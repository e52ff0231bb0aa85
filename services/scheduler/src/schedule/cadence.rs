//! When a launch plan's schedule fires: a cron expression shifted by an offset, or a fixed
//! interval from the activation (or the previous firing).

use aloft_proto::flyteidl::admin::{self, FixedRateUnit, schedule::ScheduleExpression};

use super::cron::{Cron, CronError};

/// The times a schedule fires at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// The cron expression's times (UTC) plus `offset` seconds (may be negative).
    Cron {
        /// The expression.
        cron: Cron,
        /// From `CronSchedule.offset` (an ISO-8601 duration).
        offset: i64,
    },
    /// Every `seconds` after the previous time, the first one `seconds` after activation, like
    /// Flyte's native scheduler (`FixedRate`, and the `@every` form metadata also accepts).
    Every {
        /// The interval, at least one second.
        seconds: i64,
    },
}

impl Cadence {
    /// The first firing time strictly after `t` (Unix seconds); `None` if it never fires again.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        match self {
            Cadence::Cron { cron, offset } => cron.next_after(t - offset).map(|c| c + offset),
            Cadence::Every { seconds } => Some(t + seconds),
        }
    }
}

/// A launch plan's schedule, ready to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// When it fires.
    pub cadence: Cadence,
    /// The workflow input that receives the scheduled time, if any.
    pub kickoff_arg: Option<String>,
}

/// Why a stored schedule cannot be evaluated. Metadata validates schedules only lightly at
/// registration, so these surface here, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `cron_schedule.schedule` does not parse.
    #[error("schedule.cron_schedule.schedule: {0}")]
    Cron(#[from] CronError),
    /// `cron_schedule.offset` is not a supported ISO-8601 duration.
    #[error("schedule.cron_schedule.offset: `{text}` {message}")]
    Offset {
        /// The offset as given.
        text: String,
        /// What is wrong.
        message: String,
    },
    /// `@every` with a bad duration.
    #[error("schedule.cron_schedule.schedule: `{text}` {message}")]
    Every {
        /// The expression as given.
        text: String,
        /// What is wrong.
        message: String,
    },
    /// `rate` with a zero value or an unknown unit.
    #[error("schedule.rate: {0}")]
    Rate(String),
    /// The deprecated six-field `cron_expression` (AWS CloudWatch syntax, days of the week
    /// numbered from 1): Flyte's native scheduler does not run it either.
    #[error(
        "schedule.cron_expression: the deprecated AWS-style expression `{0}` is not supported; use \
         CronSchedule(schedule=...) with five fields"
    )]
    Legacy(String),
    /// No expression at all.
    #[error("schedule: no cron_schedule or rate")]
    Missing,
}

impl ScheduleSpec {
    /// Reads a launch plan's `entity_metadata.schedule`.
    pub fn from_proto(s: &admin::Schedule) -> Result<ScheduleSpec, ScheduleError> {
        #[allow(deprecated)] // the legacy field is only matched to be refused by name
        let cadence = match &s.schedule_expression {
            Some(ScheduleExpression::CronSchedule(c)) => {
                let text = c.schedule.trim();
                if let Some(every) = text.strip_prefix("@every ") {
                    if !c.offset.trim().is_empty() {
                        return Err(ScheduleError::Offset {
                            text: c.offset.clone(),
                            message: "cannot be combined with @every".into(),
                        });
                    }
                    Cadence::Every { seconds: parse_every(every)? }
                } else {
                    Cadence::Cron { cron: Cron::parse(text)?, offset: parse_offset(&c.offset)? }
                }
            }
            Some(ScheduleExpression::Rate(rate)) => {
                let unit = match FixedRateUnit::try_from(rate.unit) {
                    Ok(FixedRateUnit::Minute) => 60,
                    Ok(FixedRateUnit::Hour) => 3600,
                    Ok(FixedRateUnit::Day) => 86_400,
                    Err(_) => return Err(ScheduleError::Rate(format!("unknown unit {}", rate.unit))),
                };
                if rate.value == 0 {
                    return Err(ScheduleError::Rate("value must be greater than zero".into()));
                }
                Cadence::Every { seconds: i64::from(rate.value) * unit }
            }
            Some(ScheduleExpression::CronExpression(e)) => return Err(ScheduleError::Legacy(e.clone())),
            None => return Err(ScheduleError::Missing),
        };
        let kickoff_arg = Some(s.kickoff_time_input_arg.clone()).filter(|a| !a.is_empty());
        Ok(ScheduleSpec { cadence, kickoff_arg })
    }
}

/// An ISO-8601 duration of weeks, days, hours, minutes and seconds, optionally negative:
/// `P1D`, `PT1H30M`, `-PT15M`, `P1W`. Years and months are refused: their length varies, so
/// "cron time plus one month" has no single meaning. Empty means no offset.
pub fn parse_offset(text: &str) -> Result<i64, ScheduleError> {
    let err = |message: &str| ScheduleError::Offset { text: text.to_string(), message: message.to_string() };
    let t = text.trim().to_ascii_uppercase();
    if t.is_empty() {
        return Ok(0);
    }
    let (sign, rest) = match t.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, t.strip_prefix('+').unwrap_or(&t)),
    };
    let Some(body) = rest.strip_prefix('P') else {
        return Err(err("is not an ISO-8601 duration (expected e.g. PT1H or P1D)"));
    };
    let (mut total, mut in_time, mut number, mut any) = (0i64, false, String::new(), false);
    for c in body.chars() {
        match c {
            '0'..='9' => number.push(c),
            'T' if !in_time && number.is_empty() => in_time = true,
            _ => {
                let unit = match (c, in_time) {
                    ('W', false) => 7 * 86_400,
                    ('D', false) => 86_400,
                    ('H', true) => 3600,
                    ('M', true) => 60,
                    ('S', true) => 1,
                    ('Y', false) | ('M', false) => {
                        return Err(err("uses years or months, whose length varies; use days"));
                    }
                    _ => return Err(err("is not an ISO-8601 duration (expected e.g. PT1H or P1D)")),
                };
                let n: i64 = number.parse().map_err(|_| err("has a unit without a number"))?;
                total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(|| err("is too large"))?;
                number.clear();
                any = true;
            }
        }
    }
    if !number.is_empty() || !any {
        return Err(err("is not an ISO-8601 duration (expected e.g. PT1H or P1D)"));
    }
    Ok(sign * total)
}

/// The Go-style duration of robfig/cron's `@every` (`90s`, `5m`, `1h30m`), whole seconds.
fn parse_every(text: &str) -> Result<i64, ScheduleError> {
    let err = |message: &str| ScheduleError::Every { text: format!("@every {text}"), message: message.to_string() };
    let (mut total, mut number) = (0i64, String::new());
    for c in text.trim().chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' => {
                let n: i64 = number.parse().map_err(|_| err("has a unit without a number"))?;
                let unit = match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(|| err("is too large"))?;
                number.clear();
            }
            _ => return Err(err("is not a duration like 90s, 5m or 1h30m")),
        }
    }
    if !number.is_empty() {
        return Err(err("is not a duration like 90s, 5m or 1h30m"));
    }
    if total < 1 {
        return Err(err("must be at least one second"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::calendar::{DAY, days_from_civil, format_utc};
    use admin::{CronSchedule, FixedRate, Schedule};

    fn cron(schedule: &str, offset: &str) -> Schedule {
        Schedule {
            kickoff_time_input_arg: "kickoff".into(),
            schedule_expression: Some(ScheduleExpression::CronSchedule(CronSchedule {
                schedule: schedule.into(),
                offset: offset.into(),
            })),
        }
    }

    fn rate(value: u32, unit: FixedRateUnit) -> Schedule {
        Schedule {
            kickoff_time_input_arg: String::new(),
            schedule_expression: Some(ScheduleExpression::Rate(FixedRate { value, unit: unit as i32 })),
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset(""), Ok(0));
        assert_eq!(parse_offset("PT1H30M"), Ok(5400));
        assert_eq!(parse_offset("P1D"), Ok(86_400));
        assert_eq!(parse_offset("P1DT2S"), Ok(86_402));
        assert_eq!(parse_offset("P2W"), Ok(14 * 86_400));
        assert_eq!(parse_offset("-PT15M"), Ok(-900));
        assert_eq!(parse_offset("pt10s"), Ok(10));
        let e = |t: &str| parse_offset(t).unwrap_err().to_string();
        assert_eq!(
            e("P1M"),
            "schedule.cron_schedule.offset: `P1M` uses years or months, whose length varies; use days"
        );
        assert_eq!(
            e("1H"),
            "schedule.cron_schedule.offset: `1H` is not an ISO-8601 duration (expected e.g. PT1H or P1D)"
        );
        assert_eq!(
            e("PT"),
            "schedule.cron_schedule.offset: `PT` is not an ISO-8601 duration (expected e.g. PT1H or P1D)"
        );
        assert_eq!(
            e("P1H"),
            "schedule.cron_schedule.offset: `P1H` is not an ISO-8601 duration (expected e.g. PT1H or P1D)"
        );
        assert_eq!(
            e("PT5"),
            "schedule.cron_schedule.offset: `PT5` is not an ISO-8601 duration (expected e.g. PT1H or P1D)"
        );
    }

    #[test]
    fn cron_with_offset_shifts_every_time() {
        let spec = ScheduleSpec::from_proto(&cron("0 0 * * *", "PT2H")).unwrap();
        assert_eq!(spec.kickoff_arg.as_deref(), Some("kickoff"));
        let t = days_from_civil(2024, 1, 1) * DAY;
        assert_eq!(format_utc(spec.cadence.next_after(t).unwrap()), "2024-01-01T02:00:00Z");
        assert_eq!(format_utc(spec.cadence.next_after(t + 2 * 3600).unwrap()), "2024-01-02T02:00:00Z");
        let back = ScheduleSpec::from_proto(&cron("0 0 * * *", "-PT1H")).unwrap();
        assert_eq!(format_utc(back.cadence.next_after(t).unwrap()), "2024-01-01T23:00:00Z");
    }

    #[test]
    fn fixed_rates_and_every() {
        let s = |sched: Schedule| ScheduleSpec::from_proto(&sched).map(|s| s.cadence);
        assert_eq!(s(rate(10, FixedRateUnit::Minute)), Ok(Cadence::Every { seconds: 600 }));
        assert_eq!(s(rate(2, FixedRateUnit::Hour)), Ok(Cadence::Every { seconds: 7200 }));
        assert_eq!(s(rate(1, FixedRateUnit::Day)), Ok(Cadence::Every { seconds: 86_400 }));
        assert_eq!(s(cron("@every 1h30m", "")), Ok(Cadence::Every { seconds: 5400 }));
        assert_eq!(Cadence::Every { seconds: 60 }.next_after(1000), Some(1060));
        let e = |sched: Schedule| ScheduleSpec::from_proto(&sched).unwrap_err().to_string();
        assert_eq!(e(rate(0, FixedRateUnit::Minute)), "schedule.rate: value must be greater than zero");
        assert_eq!(
            e(cron("@every 5x", "")),
            "schedule.cron_schedule.schedule: `@every 5x` is not a duration like 90s, 5m or 1h30m"
        );
        assert_eq!(
            e(cron("@every 0s", "")),
            "schedule.cron_schedule.schedule: `@every 0s` must be at least one second"
        );
        assert_eq!(
            e(cron("0 0 * *", "")),
            "schedule.cron_schedule.schedule: cron `0 0 * *`: expected 5 fields (minute hour day-of-month month \
             day-of-week) or an @alias, found 4"
        );
        #[allow(deprecated)]
        let legacy = Schedule {
            kickoff_time_input_arg: String::new(),
            schedule_expression: Some(ScheduleExpression::CronExpression("0 10 * * ? *".into())),
        };
        assert!(e(legacy).starts_with("schedule.cron_expression: the deprecated AWS-style expression `0 10 * * ? *`"));
        assert_eq!(e(Schedule::default()), "schedule: no cron_schedule or rate");
    }
}
