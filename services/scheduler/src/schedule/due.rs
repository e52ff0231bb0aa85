//! Which scheduled times to fire now, given the last time handled and the catch-up policy.
//!
//! A time is *due* once the clock has reached it and it is after the last handled one. A due
//! time is *missed* when it is older than `missed_after` (the scheduler was down, or metadata
//! unreachable, for longer than that); the others are on time and always fire. The policy only
//! decides what happens to missed times.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::cadence::Cadence;

/// What to do with missed times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Fire the missed times too, oldest first, at most the most recent `max_catch_up` of them.
    All,
    /// Fire only the most recent due time, whether missed or not.
    Latest,
    /// Fire no missed time.
    None,
}

/// The catch-up policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// What to do with missed times.
    pub catch_up: CatchUp,
    /// Bound on the missed times fired per schedule with [`CatchUp::All`].
    pub max_catch_up: u32,
    /// Age in seconds beyond which a due time counts as missed.
    pub missed_after: i64,
}

/// The decision for one schedule at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Due {
    /// Times to fire, oldest first.
    pub fire: Vec<i64>,
    /// Due times deliberately not fired (missed, per the policy).
    pub skipped: u64,
    /// The newest due time: once `fire` has been fired, every time up to here is handled.
    pub handled_until: Option<i64>,
}

/// The times of `cadence` in `(from, now]` and what to do with them.
pub fn due(cadence: &Cadence, from: i64, now: i64, policy: &Policy) -> Due {
    let keep = policy.max_catch_up.max(1) as usize;
    let missed_before = now - policy.missed_after;
    let (mut start, mut skipped) = (from, 0u64);
    // A fixed interval down for a year would be 500 000 iterations: jump over the times that
    // can be neither kept nor on time, counting them as skipped.
    if let Cadence::Every { seconds } = cadence {
        let keep_from = missed_before - (keep as i64 + 1) * seconds;
        if keep_from > start {
            let jumped = (keep_from - start) / seconds;
            start += jumped * seconds;
            skipped = jumped as u64;
        }
    }
    let (mut missed, mut missed_count, mut on_time) = (VecDeque::with_capacity(keep), 0u64, Vec::new());
    let mut last = None;
    let mut t = start;
    while let Some(next) = cadence.next_after(t).filter(|n| *n <= now) {
        if next < missed_before {
            if missed.len() == keep {
                missed.pop_front();
            }
            missed.push_back(next);
            missed_count += 1;
        } else {
            on_time.push(next);
        }
        last = Some(next);
        t = next;
    }
    // The jump above stops short of `missed_before`, so `last` is set whenever it jumped.
    let handled_until = last;
    let due_count = missed_count + on_time.len() as u64;
    let fire: Vec<i64> = match policy.catch_up {
        CatchUp::All => {
            let bounded = missed.len().min(policy.max_catch_up as usize);
            missed.iter().skip(missed.len() - bounded).copied().chain(on_time.iter().copied()).collect()
        }
        CatchUp::Latest => last.into_iter().collect(),
        CatchUp::None => on_time,
    };
    // `fire` is a subset of the due times.
    skipped += due_count - fire.len() as u64;
    Due { fire, skipped, handled_until }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::cron::Cron;
    use proptest::prelude::*;

    const MIN: i64 = 60;

    fn every_minute() -> Cadence {
        Cadence::Every { seconds: MIN }
    }

    fn policy(catch_up: CatchUp, max_catch_up: u32) -> Policy {
        Policy { catch_up, max_catch_up, missed_after: 2 * MIN }
    }

    #[test]
    fn nothing_is_due_before_the_next_time() {
        let d = due(&every_minute(), 1000, 1059, &policy(CatchUp::All, 5));
        assert_eq!(d, Due::default());
        let d = due(&every_minute(), 1000, 1060, &policy(CatchUp::None, 5));
        assert_eq!(d, Due { fire: vec![1060], skipped: 0, handled_until: Some(1060) });
    }

    #[test]
    fn on_time_times_always_fire() {
        // Two due times, both within missed_after: every policy but latest fires both.
        for p in [CatchUp::All, CatchUp::None] {
            let d = due(&every_minute(), 0, 2 * MIN, &policy(p, 0));
            assert_eq!(d.fire, vec![MIN, 2 * MIN], "{p:?}");
            assert_eq!(d.skipped, 0);
        }
        let d = due(&every_minute(), 0, 2 * MIN, &policy(CatchUp::Latest, 0));
        assert_eq!((d.fire, d.skipped), (vec![2 * MIN], 1));
    }

    #[test]
    fn catch_up_policies_after_ten_minutes_down() {
        // Due: 1..=10 minutes; 8, 9 and 10 are on time (missed_after = 2 minutes), 1..=7 missed.
        let (from, now) = (0, 10 * MIN);
        let all = due(&every_minute(), from, now, &policy(CatchUp::All, 3));
        assert_eq!(all.fire, vec![5 * MIN, 6 * MIN, 7 * MIN, 8 * MIN, 9 * MIN, 10 * MIN]);
        assert_eq!(all.skipped, 4);
        assert_eq!(all.handled_until, Some(10 * MIN));
        let unbounded = due(&every_minute(), from, now, &policy(CatchUp::All, 100));
        assert_eq!(unbounded.fire, (1..=10).map(|m| m * MIN).collect::<Vec<_>>());
        assert_eq!(unbounded.skipped, 0);
        let latest = due(&every_minute(), from, now, &policy(CatchUp::Latest, 3));
        assert_eq!((latest.fire, latest.skipped), (vec![10 * MIN], 9));
        let none = due(&every_minute(), from, now, &policy(CatchUp::None, 3));
        assert_eq!((none.fire, none.skipped), (vec![8 * MIN, 9 * MIN, 10 * MIN], 7));
        assert_eq!(none.handled_until, Some(10 * MIN));
    }

    #[test]
    fn all_missed_and_none_fired_still_moves_on() {
        let d = due(&every_minute(), 0, 10 * MIN + 30, &Policy { missed_after: 0, ..policy(CatchUp::None, 3) });
        assert_eq!((d.fire.len(), d.skipped, d.handled_until), (0, 10, Some(10 * MIN)));
    }

    #[test]
    fn a_year_of_fixed_rate_downtime_is_cheap_and_bounded() {
        let year = 365 * 86_400;
        let d = due(&every_minute(), 0, year, &policy(CatchUp::All, 2));
        assert_eq!(d.fire, vec![year - 4 * MIN, year - 3 * MIN, year - 2 * MIN, year - MIN, year]);
        assert_eq!(d.skipped + d.fire.len() as u64, (year / MIN) as u64);
        assert_eq!(d.handled_until, Some(year));
        let none = due(&every_minute(), 0, year, &policy(CatchUp::None, 2));
        assert_eq!(none.skipped + none.fire.len() as u64, (year / MIN) as u64);
    }

    #[test]
    fn cron_catch_up() {
        let cron = Cadence::Cron { cron: Cron::parse("0 * * * *").unwrap(), offset: 0 };
        // Down for five hours and a half: 1:00..=5:00 are missed.
        let now = 5 * 3600 + 1800;
        let p = Policy { catch_up: CatchUp::All, max_catch_up: 2, missed_after: 600 };
        let d = due(&cron, 0, now, &p);
        assert_eq!((d.fire, d.skipped, d.handled_until), (vec![4 * 3600, 5 * 3600], 3, Some(5 * 3600)));
    }

    proptest! {
        /// Whatever the policy, fired times are due, increasing, on the cadence, no more than the
        /// bound plus the on-time ones, and fired + skipped accounts for every due time.
        #[test]
        fn accounting(
            seconds in 1i64..5000,
            from in 0i64..100_000,
            elapsed in 0i64..2_000_000,
            max in 0u32..20,
            missed_after in 0i64..10_000,
            p in prop_oneof![Just(CatchUp::All), Just(CatchUp::Latest), Just(CatchUp::None)],
        ) {
            let cadence = Cadence::Every { seconds };
            let now = from + elapsed;
            let d = due(&cadence, from, now, &Policy { catch_up: p, max_catch_up: max, missed_after });
            let total = (elapsed / seconds) as u64;
            prop_assert_eq!(d.fire.len() as u64 + d.skipped, total);
            prop_assert!(d.fire.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(d.fire.iter().all(|t| *t > from && *t <= now && (t - from) % seconds == 0));
            let on_time = d.fire.iter().filter(|t| **t >= now - missed_after).count();
            let missed_fired = d.fire.len() - on_time;
            match p {
                CatchUp::All => prop_assert!(missed_fired <= max as usize),
                CatchUp::Latest => prop_assert!(d.fire.len() <= 1),
                CatchUp::None => prop_assert_eq!(missed_fired, 0),
            }
            prop_assert_eq!(d.handled_until, (total > 0).then(|| from + total as i64 * seconds));
            if total > 0 && (p == CatchUp::Latest || (p == CatchUp::All && max > 0)) {
                prop_assert_eq!(d.fire.last().copied(), d.handled_until);
            }
        }
    }
}
