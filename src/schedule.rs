//! The daemon's schedule: a cron expression in a time zone. Pure: the clock is
//! always passed in.
//!
//! Parsing and field matching are `croner`'s. What is added here is the
//! daylight-saving contract: a scheduled local time that falls in a skipped
//! hour runs at the first valid instant after the gap (croner's behaviour), and
//! a local time that occurs twice when clocks go back runs once, at its first
//! occurrence (croner resolves an ambiguous time to the first instant, which
//! can lie *before* the instant searched from; [`Schedule::next_after`] steps
//! past it instead of returning a time in the past).

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;

/// The time zone a schedule is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The machine's local zone (`TZ`, else `/etc/localtime`).
    Local,
    /// A named IANA zone.
    Named(chrono_tz::Tz),
}

impl Zone {
    /// Parses an IANA name (`Europe/Lisbon`, `UTC`), or `local`.
    pub fn parse(s: &str) -> Option<Zone> {
        let s = s.trim().trim_start_matches(':');
        if s.eq_ignore_ascii_case("local") {
            return Some(Zone::Local);
        }
        s.parse::<chrono_tz::Tz>().ok().map(Zone::Named)
    }
}

impl std::fmt::Display for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Zone::Local => f.write_str("local time"),
            Zone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

/// A parsed cron expression and the zone it is read in.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    text: String,
    zone: Zone,
}

impl Schedule {
    /// Parses a cron expression of 5 fields (minute first) or 6 (seconds
    /// first), or a nickname such as `@daily`.
    pub fn parse(text: &str, zone: Zone) -> Result<Schedule, String> {
        let fields = text.split_whitespace().count();
        if !text.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!("found {fields} fields"));
        }
        let cron = Cron::new(text.trim())
            .with_seconds_optional()
            .parse()
            .map_err(|e| e.to_string())?;
        let schedule = Schedule {
            cron,
            text: text.trim().to_owned(),
            zone,
        };
        // An expression that never fires (Feb 30) is as wrong as a typo. A
        // fixed reference keeps this pure: any real date, Feb 29 included,
        // comes within a few years of 2000-01-01.
        let reference = DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or_default();
        schedule
            .next_after(reference)
            .ok_or_else(|| "it never matches a real date".to_owned())?;
        Ok(schedule)
    }

    /// The expression as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The zone the expression is read in.
    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// The first scheduled instant strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.zone {
            Zone::Local => self.next_in(&chrono::Local, after),
            Zone::Named(tz) => self.next_in(&tz, after),
        }
    }

    fn next_in<Tz: TimeZone>(&self, tz: &Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = after.with_timezone(tz);
        // A handful of steps is enough: each one moves at least one second of
        // local wall time forward; the loop bound only guards against a bug.
        for _ in 0..8 {
            let next = self.cron.find_next_occurrence(&from, false).ok()?;
            let next_utc = next.with_timezone(&Utc);
            if next_utc > after {
                return Some(next_utc);
            }
            // An ambiguous local time resolved to its first instant, which is
            // not after `after`: it already ran; search on from there.
            from = next;
        }
        None
    }

    /// The next `n` scheduled instants after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// Whether a scheduled run was missed: one was due after `last_success`
    /// (or there never was a success) and at or before `now`.
    pub fn missed_run(&self, last_success: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        match last_success {
            None => true,
            Some(last) => self.next_after(last).is_some_and(|due| due <= now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn zone(name: &str) -> Zone {
        Zone::parse(name).unwrap()
    }

    /// (expression, zone, after, the next instants expected, in UTC)
    const CASES: &[(&str, &str, &str, &[&str])] = &[
        // Daily at midnight, plain.
        (
            "0 0 * * *",
            "UTC",
            "2026-11-27T10:00:00Z",
            &["2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z"],
        ),
        // Hourly.
        (
            "0 * * * *",
            "UTC",
            "2026-11-27T10:00:00Z",
            &["2026-11-27T11:00:00Z", "2026-11-27T12:00:00Z"],
        ),
        // Six fields: every 2 seconds.
        (
            "*/2 * * * * *",
            "UTC",
            "2026-11-27T10:00:01Z",
            &["2026-11-27T10:00:02Z", "2026-11-27T10:00:04Z"],
        ),
        // Last day of the month.
        (
            "0 3 L * *",
            "UTC",
            "2026-02-01T00:00:00Z",
            &["2026-02-28T03:00:00Z", "2026-03-31T03:00:00Z"],
        ),
        // Ranges and lists: weekdays at 9 and 17.
        (
            "0 9,17 * * 1-5",
            "UTC",
            "2026-11-27T18:00:00Z",
            &["2026-11-30T09:00:00Z", "2026-11-30T17:00:00Z"],
        ),
        // Lisbon, spring forward 2026-03-29 01:00 -> 02:00 local: 01:30 does not
        // exist; the day's backup runs at the end of the gap, once.
        (
            "30 1 * * *",
            "Europe/Lisbon",
            "2026-03-28T12:00:00Z",
            &["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
        ),
        // Lisbon, fall back 2026-10-25 02:00 -> 01:00 local: 01:30 happens twice;
        // it runs once, at the first.
        (
            "30 1 * * *",
            "Europe/Lisbon",
            "2026-10-24T12:00:00Z",
            &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
        ),
        // New York, spring forward 2026-03-08 02:00 -> 03:00 local.
        (
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T12:00:00Z",
            &["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
        ),
        // New York, fall back 2026-11-01 02:00 -> 01:00 local: 01:30 EDT only.
        (
            "30 1 * * *",
            "America/New_York",
            "2026-10-31T12:00:00Z",
            &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
        ),
        // Hourly through New York's repeated hour: no instant twice, none in the past.
        (
            "0 * * * *",
            "America/New_York",
            "2026-11-01T04:30:00Z",
            &["2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z"],
        ),
        // Daily at midnight in Sydney across its April fall back.
        (
            "0 0 * * *",
            "Australia/Sydney",
            "2026-04-04T00:00:00Z",
            &["2026-04-04T13:00:00Z", "2026-04-05T14:00:00Z"],
        ),
    ];

    #[test]
    fn next_runs_table() {
        for (expr, tz, after, expected) in CASES {
            let s = Schedule::parse(expr, zone(tz)).unwrap();
            let got: Vec<String> = s
                .upcoming(utc(after), expected.len())
                .iter()
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .collect();
            assert_eq!(&got, expected, "{expr} in {tz} after {after}");
        }
    }

    #[test]
    fn a_search_from_inside_a_repeated_hour_never_goes_back() {
        // 05:45Z is 01:45 EDT; 06:15Z is 01:15 EST, inside the repeated hour,
        // after 01:30 EDT already happened.
        let s = Schedule::parse("30 1 * * *", zone("America/New_York")).unwrap();
        let next = s.next_after(utc("2026-11-01T06:15:00Z")).unwrap();
        assert_eq!(next, utc("2026-11-02T06:30:00Z"));
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "0 0 31 2 *",
            "every day",
        ] {
            assert!(
                Schedule::parse(bad, Zone::Named(chrono_tz::UTC)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn missed_runs() {
        let s = Schedule::parse("0 0 * * *", zone("UTC")).unwrap();
        let now = utc("2026-11-27T10:00:00Z");
        assert!(s.missed_run(None, now));
        assert!(s.missed_run(Some(utc("2026-11-26T09:00:00Z")), now));
        assert!(!s.missed_run(Some(utc("2026-11-27T00:00:05Z")), now));
    }
}
