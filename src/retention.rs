//! Retention as a pure function: archives, policy and clock in, a decision
//! with its reasons out for each archive. Deleting is the caller's job
//! (`prune` logs the plan, then applies it, so `--dry-run` is the same plan).
//!
//! An archive is kept if any rule keeps it (restic/borg semantics):
//! younger than `BACKUP_RETENTION_DAYS`; among the last N; the newest of one
//! of the last N days, ISO weeks or months that have an archive. The newest
//! archive is always kept, even when it is older than the retention period:
//! when backups have been failing, it is the last good one.
//!
//! Every archive is a restore point, a full or a differential alike, and
//! the rules count them so. A differential restores only with its full:
//! a full is kept as long as any kept differential needs it, and says so.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use crate::format::age_text;
use crate::schedule::Zone;

/// Retention rules, restic/borg style. An archive is kept if any rule keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Archives younger than this many days are kept (`BACKUP_RETENTION_DAYS`).
    pub days: u32,
    /// Keep the newest N archives.
    pub keep_last: u32,
    /// Keep the newest archive of each of the last N days that have one.
    pub keep_daily: u32,
    /// Keep the newest archive of each of the last N ISO weeks that have one.
    pub keep_weekly: u32,
    /// Keep the newest archive of each of the last N months that have one.
    pub keep_monthly: u32,
}

/// An archive to decide about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// File name.
    pub name: String,
    /// The time in its name (UTC).
    pub time: DateTime<Utc>,
    /// For a differential, the name of its full.
    pub base: Option<String>,
}

/// The decision about one archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// File name.
    pub name: String,
    /// Its time.
    pub time: DateTime<Utc>,
    /// Keep (true) or delete.
    pub keep: bool,
    /// Why: every rule that keeps it, or why none does.
    pub reasons: Vec<String>,
}

fn local_date(zone: Zone, t: DateTime<Utc>) -> NaiveDate {
    match zone {
        Zone::Local => t.with_timezone(&chrono::Local).date_naive(),
        Zone::Named(tz) => t.with_timezone(&tz).date_naive(),
    }
}

/// The decision about a file retention does not manage (not this
/// project's trusted archive): kept, and why it is left alone.
pub fn left_alone(name: &str, time: DateTime<Utc>, why: &str) -> Decision {
    Decision {
        name: name.to_owned(),
        time,
        keep: true,
        reasons: vec![format!(
            "left alone: {why}; retention only deletes this project's archives signed by a trusted key"
        )],
    }
}

/// Decides, for each archive, whether to keep it. Returns the decisions
/// newest first. `zone` defines days, weeks and months for the GFS rules.
pub fn plan(
    archives: &[Candidate],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    zone: Zone,
) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = archives.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then(b.name.cmp(&a.name)));

    let mut decisions: Vec<Decision> = sorted
        .iter()
        .map(|c| Decision {
            name: c.name.clone(),
            time: c.time,
            keep: false,
            reasons: Vec::new(),
        })
        .collect();

    let max_age = i64::from(policy.days) * 86_400;
    for d in &mut decisions {
        let age = (now - d.time).num_seconds();
        if age < max_age {
            d.keep = true;
            d.reasons.push(format!(
                "younger than {} days (age {})",
                policy.days,
                age_text(age)
            ));
        }
    }
    if let Some(first) = decisions.first_mut() {
        first.keep = true;
        first
            .reasons
            .push("the newest archive is never deleted".into());
    }
    for d in decisions.iter_mut().take(policy.keep_last as usize) {
        d.keep = true;
        d.reasons
            .push(format!("one of the last {}", policy.keep_last));
    }

    // Grandfather-father-son: the newest archive of each bucket, for the
    // newest N buckets that have one.
    let mut bucket_rule = |n: u32,
                           label: &str,
                           key: &dyn Fn(NaiveDate) -> (i32, u32, u32),
                           name: &dyn Fn(NaiveDate) -> String| {
        if n == 0 {
            return;
        }
        let mut seen: HashSet<(i32, u32, u32)> = HashSet::new();
        for d in decisions.iter_mut() {
            let date = local_date(zone, d.time);
            if seen.len() == n as usize && !seen.contains(&key(date)) {
                break;
            }
            if seen.insert(key(date)) {
                d.keep = true;
                d.reasons
                    .push(format!("{label} archive for {}", name(date)));
            }
        }
    };
    bucket_rule(
        policy.keep_daily,
        "daily",
        &|d| (d.year(), d.ordinal(), 0),
        &|d| d.format("%Y-%m-%d").to_string(),
    );
    bucket_rule(
        policy.keep_weekly,
        "weekly",
        &|d| (d.iso_week().year(), d.iso_week().week(), 1),
        &|d| format!("{}-W{:02}", d.iso_week().year(), d.iso_week().week()),
    );
    bucket_rule(
        policy.keep_monthly,
        "monthly",
        &|d| (d.year(), d.month(), 2),
        &|d| d.format("%Y-%m").to_string(),
    );

    // A kept differential keeps its full (decisions are newest first: the
    // first differential seen is the newest that needs it).
    let mut needed: std::collections::HashMap<&str, (usize, &str)> = Default::default();
    for (d, c) in decisions.iter().zip(&sorted) {
        if let (true, Some(base)) = (d.keep, c.base.as_deref()) {
            needed.entry(base).or_insert((0, c.name.as_str())).0 += 1;
        }
    }
    for d in &mut decisions {
        if let Some((count, newest)) = needed.get(d.name.as_str()) {
            d.keep = true;
            d.reasons.push(if *count == 1 {
                format!("the full of {newest}, which is kept")
            } else {
                format!("the full of {count} kept differentials (the newest {newest})")
            });
        }
    }
    for d in &mut decisions {
        if !d.keep {
            let age = (now - d.time).num_seconds();
            d.reasons.push(format!(
                "older than {} days (age {}) and kept by no other rule",
                policy.days,
                age_text(age)
            ));
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn cand(t: DateTime<Utc>) -> Candidate {
        Candidate {
            name: crate::store::ArchiveName::format(
                t,
                crate::archive::Compression::Gzip(6),
                true,
                false,
            ),
            time: t,
            base: None,
        }
    }

    fn policy(days: u32) -> RetentionPolicy {
        RetentionPolicy {
            days,
            ..Default::default()
        }
    }

    fn kept(decisions: &[Decision]) -> Vec<String> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.time.format("%m-%d %H").to_string())
            .collect()
    }

    const UTC: Zone = Zone::Named(chrono_tz::UTC);

    #[test]
    fn table() {
        let now = at(2026, 11, 27, 12);
        // (what, archives as day offsets back from now, policy, expected kept)
        struct Case {
            what: &'static str,
            days_back: Vec<i64>,
            policy: RetentionPolicy,
            kept: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                what: "all fresh: nothing is deleted",
                days_back: vec![0, 1, 2, 3],
                policy: policy(7),
                kept: vec!["11-27 12", "11-26 12", "11-25 12", "11-24 12"],
            },
            Case {
                what: "all expired: the newest is still kept",
                days_back: vec![10, 11, 12],
                policy: policy(7),
                kept: vec!["11-17 12"],
            },
            Case {
                what: "a gap of failed days: fresh ones kept, old ones go",
                days_back: vec![0, 1, 9, 10, 11],
                policy: policy(7),
                kept: vec!["11-27 12", "11-26 12"],
            },
            Case {
                what: "exactly at the boundary the archive goes",
                days_back: vec![0, 7],
                policy: policy(7),
                kept: vec!["11-27 12"],
            },
            Case {
                what: "keep-last adds to the window",
                days_back: vec![0, 10, 20, 30],
                policy: RetentionPolicy {
                    days: 7,
                    keep_last: 3,
                    ..Default::default()
                },
                kept: vec!["11-27 12", "11-17 12", "11-07 12"],
            },
            Case {
                what: "GFS combined: 2 daily, 2 weekly, 3 monthly",
                days_back: vec![0, 1, 2, 8, 9, 16, 40, 41, 70, 100, 130],
                policy: RetentionPolicy {
                    days: 0,
                    keep_daily: 2,
                    keep_weekly: 2,
                    keep_monthly: 3,
                    keep_last: 0,
                },
                // daily: 11-27, 11-26; weekly: W48 (11-27), W47 (11-19);
                // monthly: 2026-11 (11-27), 2026-10 (10-18), 2026-09 (09-18).
                kept: vec!["11-27 12", "11-26 12", "11-19 12", "10-18 12", "09-18 12"],
            },
        ];
        for c in cases {
            let archives: Vec<Candidate> = c
                .days_back
                .iter()
                .map(|d| cand(now - chrono::Duration::days(*d)))
                .collect();
            let decisions = plan(&archives, &c.policy, now, UTC);
            assert_eq!(kept(&decisions), c.kept, "{}", c.what);
            for d in &decisions {
                assert!(
                    !d.reasons.is_empty(),
                    "{}: {} has no reason",
                    c.what,
                    d.name
                );
            }
        }
    }

    /// A chain: a full `days_back[0]` days ago, then differentials of it.
    fn chain(now: DateTime<Utc>, days_back: &[i64]) -> Vec<Candidate> {
        let full = cand(now - chrono::Duration::days(days_back[0]));
        let mut out = vec![full.clone()];
        for d in &days_back[1..] {
            let t = now - chrono::Duration::days(*d);
            out.push(Candidate {
                name: crate::store::ArchiveName::format(
                    t,
                    crate::archive::Compression::Gzip(6),
                    true,
                    true,
                ),
                time: t,
                base: Some(full.name.clone()),
            });
        }
        out
    }

    #[test]
    fn a_kept_differential_keeps_its_full() {
        let now = at(2026, 11, 27, 12);
        let mut archives = chain(now, &[10, 9, 8, 7, 6, 5, 4]);
        archives.extend(chain(now, &[3, 2, 1, 0]));
        // (policy, what is kept: restore points by the rules, and the
        // fulls they need)
        let cases = [
            (
                policy(7),
                vec![
                    "11-27 12", "11-26 12", "11-25 12", "11-24 12", "11-23 12", "11-22 12",
                    "11-21 12", "11-17 12",
                ],
            ),
            (
                RetentionPolicy {
                    keep_daily: 2,
                    ..Default::default()
                },
                vec!["11-27 12", "11-26 12", "11-24 12"],
            ),
            (
                RetentionPolicy {
                    keep_last: 1,
                    ..Default::default()
                },
                vec!["11-27 12", "11-24 12"],
            ),
        ];
        for (policy, want) in cases {
            let decisions = plan(&archives, &policy, now, UTC);
            assert_eq!(kept(&decisions), want, "{policy:?}");
            for d in decisions.iter().filter(|d| d.keep) {
                assert!(!d.reasons.is_empty(), "{}", d.name);
            }
        }
        let decisions = plan(&archives, &policy(7), now, UTC);
        let old_full = decisions
            .iter()
            .find(|d| d.time == now - chrono::Duration::days(10))
            .unwrap();
        assert_eq!(
            old_full.reasons,
            vec![format!(
                "the full of 3 kept differentials (the newest {})",
                archives[6].name
            )]
        );
        // Deleting the differentials a kept one does not need is fine.
        let gone: Vec<_> = decisions
            .iter()
            .filter(|d| !d.keep)
            .map(|d| d.time)
            .collect();
        assert_eq!(gone.len(), 3);
    }

    #[test]
    fn empty_plan() {
        assert!(plan(&[], &policy(7), at(2026, 1, 1, 0), UTC).is_empty());
    }

    #[test]
    fn newest_reason_is_explicit() {
        let now = at(2026, 11, 27, 12);
        let d = plan(&[cand(at(2026, 1, 1, 0))], &policy(7), now, UTC);
        assert!(d[0].keep);
        assert!(d[0].reasons.iter().any(|r| r.contains("never deleted")));
    }

    /// Only complete archives reach the plan: temporary files, other names
    /// and symlinks in BACKUP_DIR are never candidates.
    #[test]
    fn store_listing_feeds_only_archives() {
        let dir = tempfile::tempdir().unwrap();
        let old = cand(at(2020, 1, 1, 0));
        let new = cand(at(2026, 11, 27, 0));
        for name in [
            old.name.as_str(),
            new.name.as_str(),
            ".cofre-tmp-abc.partial",
            "backup_2020-01-01T00-00-00.tar.gz.partial",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(
            outside.path(),
            dir.path().join("backup_2019-01-01T00-00-00.tar.gz"),
        )
        .unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let listed: Vec<Candidate> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|a| Candidate {
                name: a.name,
                time: a.parsed.time,
                base: None,
            })
            .collect();
        assert_eq!(listed, vec![new, old]);
        let d = plan(&listed, &policy(7), at(2026, 11, 27, 12), UTC);
        assert_eq!((d[0].keep, d[1].keep), (true, false));
    }
}
