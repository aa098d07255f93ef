//! The point-in-time window as pure functions of what is there: bases
//! (archives whose dump is one point in time, with its cluster time) and
//! slices (what their signatures claim). Runs of slices without a hole,
//! the base and slices a point needs, the window `status` shows, and the
//! slices retention may delete.

use chrono::{DateTime, Utc};

use super::Ts;
use super::slice::SliceInfo;

/// An archive a point-in-time restore can start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// The archive.
    pub name: String,
    /// Its dump's cluster time.
    pub cluster: Ts,
}

/// Where to restore to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The newest point the history reaches.
    Latest,
    /// The end of this second (every operation in it included).
    At(DateTime<Utc>),
    /// Up to and including this operation.
    Op(Ts),
    /// Up to, not including, this operation.
    Before(Ts),
}

/// The last operation a restore replays: entries with `ts <= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The last timestamp included.
    pub last: Ts,
    /// The wall time the history must be complete to.
    pub complete_to: DateTime<Utc>,
}

/// Slices one after another with no hole: each starts where the one
/// before it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Where the first slice starts.
    pub after: Ts,
    /// The last slice's last entry.
    pub until: Ts,
    /// Complete up to this wall time.
    pub complete: DateTime<Utc>,
    /// The slices (indexes into the list it was made from).
    pub slices: std::ops::Range<usize>,
}

/// The runs of `slices` (oldest first, as [`super::slice::list`] gives).
pub fn runs(slices: &[SliceInfo]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for (i, s) in slices.iter().enumerate() {
        match out.last_mut() {
            Some(r) if r.until == s.after && s.until >= s.after => {
                r.until = s.until;
                r.complete = r.complete.max(s.complete_until());
                r.slices.end = i + 1;
            }
            _ => out.push(Run {
                after: s.after,
                until: s.until,
                complete: s.complete_until(),
                slices: i..i + 1,
            }),
        }
    }
    out
}

/// Why no restore reaches a point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// No archive's dump is at or before the point.
    #[error(
        "no archive with a database dump at one point in time is at or before {point}; \
         the oldest restore point is {oldest}"
    )]
    NoBase {
        /// The point asked for.
        point: String,
        /// The oldest base's time, or "none".
        oldest: String,
    },
    /// The history from the base does not reach the point.
    #[error(
        "the oplog history from {base} does not reach {point}: it stops at {reach}{hole}; \
         restore to {reach} or earlier (`cofre oplog` lists what is there)"
    )]
    NotCovered {
        /// The base it would start from.
        base: String,
        /// The point asked for.
        point: String,
        /// The last point reachable.
        reach: String,
        /// What is missing, when a slice is.
        hole: String,
    },
}

impl crate::exit::Coded for WindowError {
    fn exit(&self) -> crate::exit::Exit {
        crate::exit::Exit::Failure
    }
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What a point-in-time restore reads: a base, then slices up to `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The archive to restore first.
    pub base: Base,
    /// The slices to replay (indexes into the slice list), in order.
    pub slices: Vec<usize>,
    /// Replay entries after the base's cluster time up to this.
    pub limit: Limit,
}

/// The plan for `point`: the newest base at or before it from which the
/// slices reach it without a hole.
pub fn plan(bases: &[Base], slices: &[SliceInfo], point: Point) -> Result<Plan, WindowError> {
    let runs = runs(slices);
    let limit = match point {
        Point::Latest => {
            let Some(r) = runs.last() else {
                return Err(WindowError::NoBase {
                    point: "the latest point".into(),
                    oldest: "none: no oplog slice was captured yet".into(),
                });
            };
            Limit {
                last: r.until,
                complete_to: r.until.time(),
            }
        }
        Point::At(t) => Limit {
            last: Ts::end_of(t),
            complete_to: t,
        },
        Point::Op(ts) => Limit {
            last: ts,
            complete_to: ts.time(),
        },
        Point::Before(ts) => Limit {
            last: if ts.i > 0 {
                Ts {
                    t: ts.t,
                    i: ts.i - 1,
                }
            } else {
                Ts {
                    t: ts.t.saturating_sub(1),
                    i: u32::MAX,
                }
            },
            complete_to: ts.time(),
        },
    };
    let shown = match point {
        Point::Latest => format!("the latest point ({})", rfc(limit.complete_to)),
        Point::At(t) => rfc(t),
        Point::Op(ts) => format!("operation {ts}"),
        Point::Before(ts) => format!("just before operation {ts}"),
    };
    let mut candidates: Vec<&Base> = bases.iter().filter(|b| b.cluster <= limit.last).collect();
    candidates.sort_by_key(|b| std::cmp::Reverse(b.cluster));
    let Some(newest) = candidates.first() else {
        let oldest = bases
            .iter()
            .map(|b| b.cluster)
            .min()
            .map_or_else(|| "none".to_owned(), |c| rfc(c.time()));
        return Err(WindowError::NoBase {
            point: shown,
            oldest,
        });
    };
    let reaches = |r: &Run| r.until >= limit.last || r.complete >= limit.complete_to;
    for base in &candidates {
        // The base itself is the point: nothing to replay.
        if base.cluster == limit.last {
            return Ok(Plan {
                base: (*base).clone(),
                slices: Vec::new(),
                limit,
            });
        }
        let Some(run) = runs
            .iter()
            .find(|r| r.after <= base.cluster && base.cluster <= r.until.max(r.after))
        else {
            continue;
        };
        if !reaches(run) {
            continue;
        }
        let chosen = run
            .slices
            .clone()
            .filter(|&i| slices[i].until > base.cluster && slices[i].after < limit.last)
            .collect();
        return Ok(Plan {
            base: (*base).clone(),
            slices: chosen,
            limit,
        });
    }
    // Say how far the newest base's history reaches, and where it breaks.
    let run = runs
        .iter()
        .find(|r| r.after <= newest.cluster && newest.cluster <= r.until.max(r.after));
    let (reach, hole) = match run {
        Some(r) => {
            let next = runs.iter().find(|n| n.after > r.until);
            (
                rfc(r.complete),
                next.map(|n| {
                    format!(
                        " (the slice that continues from operation {} is missing or damaged; the next one starts at {})",
                        r.until, n.after
                    )
                })
                .unwrap_or_default(),
            )
        }
        None => (
            rfc(newest.cluster.time()),
            " (no slice continues from its dump)".to_owned(),
        ),
    };
    Err(WindowError::NotCovered {
        base: newest.name.clone(),
        point: shown,
        reach,
        hole,
    })
}

/// The window a restore can reach now: from the oldest base the newest
/// run of slices covers, to where that run is complete; when the newest
/// base is after that run (a new history just started), that base alone.
pub fn window(bases: &[Base], slices: &[SliceInfo]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let newest = bases.iter().map(|b| b.cluster).max()?;
    let runs = runs(slices);
    let covers = |r: &Run, b: &Base| r.after <= b.cluster && b.cluster <= r.until;
    let run = runs
        .iter()
        .rev()
        .find(|r| bases.iter().any(|b| covers(r, b)));
    match run {
        Some(r) if newest <= r.until => {
            let from = bases
                .iter()
                .filter(|b| covers(r, b))
                .map(|b| b.cluster)
                .min()?;
            Some((from.time(), r.complete))
        }
        _ => Some((newest.time(), newest.time())),
    }
}

/// The slices retention may delete: those that end at or before the
/// oldest kept base's cluster time (no kept base replays them). With no
/// base, none.
pub fn deletable(kept_bases: &[Base], slices: &[SliceInfo]) -> Vec<usize> {
    let Some(oldest) = kept_bases.iter().map(|b| b.cluster).min() else {
        return Vec::new();
    };
    slices
        .iter()
        .enumerate()
        .filter(|(_, s)| s.until <= oldest)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ts(t: u32, i: u32) -> Ts {
        Ts { t, i }
    }

    fn slice(after: Ts, until: Ts, proven: u32) -> SliceInfo {
        SliceInfo {
            name: format!("oplog_{}", until),
            closed: Utc.timestamp_opt(i64::from(proven), 0).unwrap(),
            after,
            until,
            count: 1,
            proven: Utc.timestamp_opt(i64::from(proven), 0).unwrap(),
        }
    }

    fn base(name: &str, cluster: Ts) -> Base {
        Base {
            name: name.into(),
            cluster,
        }
    }

    #[test]
    fn points_choose_the_newest_base_and_the_slices_that_reach_them() {
        let bases = [base("b1", ts(100, 1)), base("b2", ts(200, 1))];
        let slices = [
            slice(ts(100, 1), ts(150, 3), 160),
            slice(ts(150, 3), ts(150, 3), 190), // idle
            slice(ts(150, 3), ts(220, 2), 230),
            slice(ts(220, 2), ts(260, 1), 300),
        ];
        let at = |s: i64| Point::At(Utc.timestamp_opt(s, 0).unwrap());
        // (point, base, slices, or why not)
        type Want = Result<(&'static str, Vec<usize>), &'static str>;
        let cases: Vec<(Point, Want)> = vec![
            (at(120), Ok(("b1", vec![0]))),
            (at(185), Ok(("b1", vec![0, 1, 2]))),
            (at(210), Ok(("b2", vec![2]))),
            (at(290), Ok(("b2", vec![2, 3]))),
            (Point::Latest, Ok(("b2", vec![2, 3]))),
            (Point::Op(ts(220, 2)), Ok(("b2", vec![2]))),
            (Point::Before(ts(220, 2)), Ok(("b2", vec![2]))),
            (Point::Op(ts(200, 1)), Ok(("b2", vec![]))),
            (at(50), Err("no archive")),
            (at(400), Err("does not reach")),
        ];
        for (point, want) in cases {
            let got = plan(&bases, &slices, point);
            match (want, got) {
                (Ok((b, s)), Ok(p)) => {
                    assert_eq!((p.base.name.as_str(), p.slices), (b, s), "{point:?}");
                }
                (Err(why), Err(e)) => assert!(e.to_string().contains(why), "{point:?}: {e}"),
                (want, got) => panic!("{point:?}: wanted {want:?}, got {got:?}"),
            }
        }
        let w = window(&bases, &slices).unwrap();
        assert_eq!(w.0.timestamp(), 100);
        assert_eq!(w.1.timestamp(), 300);
    }

    #[test]
    fn a_missing_slice_is_a_hole_and_points_past_it_are_refused() {
        let bases = [base("b1", ts(100, 1))];
        let slices = [
            slice(ts(100, 1), ts(150, 3), 160),
            // (the slice after 150,3 is missing)
            slice(ts(170, 1), ts(200, 1), 210),
        ];
        let at = |s: i64| Point::At(Utc.timestamp_opt(s, 0).unwrap());
        assert!(plan(&bases, &slices, at(155)).is_ok());
        let err = plan(&bases, &slices, at(205)).unwrap_err().to_string();
        assert!(
            err.contains("stops at") && err.contains("missing or damaged"),
            "{err}"
        );
        // The window ends where the hole begins.
        let w = window(&bases, &slices).unwrap();
        assert_eq!((w.0.timestamp(), w.1.timestamp()), (100, 160));
        assert_eq!(runs(&slices).len(), 2);
    }

    #[test]
    fn retention_deletes_slices_no_kept_base_needs() {
        let slices = [
            slice(ts(100, 1), ts(150, 3), 160),
            slice(ts(150, 3), ts(220, 2), 230),
            slice(ts(220, 2), ts(260, 1), 300),
        ];
        assert_eq!(deletable(&[base("b2", ts(220, 2))], &slices), vec![0, 1]);
        assert_eq!(deletable(&[base("b2", ts(200, 1))], &slices), vec![0]);
        assert!(deletable(&[], &slices).is_empty());
    }
}
